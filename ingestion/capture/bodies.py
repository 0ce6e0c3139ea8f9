"""Request bodies as the SDKs send them: JSON, gzip (``Content-Encoding: gzip`` or
posthog-js's ``?compression=gzip-js``), and posthog-js's base64 or form-encoded ``data=``.

An unreadable body is refused whole (400) before anything is stored, and neither the body
as sent nor its decompressed form may exceed the size caps (413), so a small gzip bomb
cannot make a web process allocate gigabytes."""

import base64
import binascii
import json
import zlib
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from rest_framework import exceptions

from config.api import RequestTooLarge

GZIP_MAGIC = b"\x1f\x8b"
# JSON compresses 10-30x; a batch that inflates past this is refused rather than read.
DECOMPRESSED_LIMIT_FACTOR = 8


class UnreadableBody(exceptions.ParseError):
    default_code = "unreadable_body"


def read_limited(stream, *, declared_length: int) -> bytes:
    """The raw body, refusing (413) one larger than INGEST_MAX_BODY_BYTES before or while
    reading it."""
    limit = settings.INGEST_MAX_BODY_BYTES
    if declared_length > limit:
        raise RequestTooLarge(limit)
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise RequestTooLarge(limit)
    return raw


def _gunzip(raw: bytes) -> bytes:
    limit = settings.INGEST_MAX_BODY_BYTES * DECOMPRESSED_LIMIT_FACTOR
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(raw, limit + 1)
    except zlib.error as error:
        raise UnreadableBody(f"The body is not valid gzip: {error}.") from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise RequestTooLarge(limit)
    if not inflater.eof:
        raise UnreadableBody("The gzip body is truncated.")
    return inflated


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    # ValueError: also an integer of over 4,300 digits; RecursionError: nesting too deep.
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise UnreadableBody(f"The body is not valid JSON: {error}.") from None


def _base64(text: str | bytes) -> bytes:
    if isinstance(text, str):
        text = text.encode("ascii", errors="replace")
    text = text.strip()
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), altchars=b"-_"
                                if b"-" in text or b"_" in text else None, validate=True)
    except (binascii.Error, ValueError):
        raise UnreadableBody("The body's data is not valid base64.") from None


def decode_posthog(raw: bytes, *, content_type: str, content_encoding: str,
                   compression: str) -> Any:
    """The JSON a PostHog SDK sent, whichever of its encodings it used."""
    compression = compression.lower()
    if compression == "lz64":
        raise UnreadableBody("lz64 compression is not supported; use gzip-js (posthog-js's "
                             "default) or no compression.")
    body = raw
    if content_type.startswith("application/x-www-form-urlencoded") or body.startswith(b"data="):
        try:
            form = parse_qs(body.decode("ascii"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise UnreadableBody("The form body is malformed.") from None
        if "data" not in form:
            raise UnreadableBody("The form body has no data field.")
        data = form["data"][0]
        if compression == "gzip-js" or compression == "gzip":
            body = _gunzip(data.encode("latin-1"))
        elif data.lstrip().startswith(("{", "[")):
            body = data.encode()
        else:
            body = _base64(data)
    elif compression == "base64":
        body = _base64(body)
    if "gzip" in content_encoding.lower() or compression in ("gzip", "gzip-js") or \
            body.startswith(GZIP_MAGIC):
        body = _gunzip(body)
    return _json(body)


def decode_segment(raw: bytes, *, content_encoding: str) -> Any:
    """The JSON a Segment library sent, gzip or not."""
    if "gzip" in content_encoding.lower() or raw.startswith(GZIP_MAGIC):
        raw = _gunzip(raw)
    return _json(raw)
