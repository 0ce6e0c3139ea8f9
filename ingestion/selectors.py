"""Reads of the ingestion domain that other apps share."""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import F, Func
from django.db.models.functions import Coalesce

from config.db import fetch_prepared
from ingestion.models import EndUser, IdentityLink


@dataclass(frozen=True)
class Person:
    """One person: the id the person is known by and every user row whose events are
    theirs (the person's own and its linked aliases)."""

    user_id: str
    user_pks: tuple[int, ...]
    # The person's own traits, values as text (what the recommender learned them as).
    traits: Mapping[str, str] = field(default_factory=dict, compare=False)


def person_of(*, user_id: str) -> Person | None:
    """The person a client app's user id belongs to (None for an id never seen). One
    indexed query: it runs on every recommendation request."""
    quote = connection.ops.quote_name
    users, links = quote(EndUser._meta.db_table), quote(IdentityLink._meta.db_table)
    sql = (f"SELECT r.{quote('user_id')}, r.{quote('id')}, a.{quote('alias_id')}, "
           f"r.{quote('traits')} "
           f"FROM {users} q LEFT JOIN {links} l ON l.{quote('alias_id')} = q.{quote('id')} "
           f"JOIN {users} r ON r.{quote('id')} = COALESCE(l.{quote('person_id')}, "
           f"q.{quote('id')}) "
           f"LEFT JOIN {links} a ON a.{quote('person_id')} = r.{quote('id')} "
           f"WHERE q.{quote('user_id')} = %s")
    rows = fetch_prepared(sql, [user_id])
    if not rows:
        return None
    root_user_id, root_pk, _, traits = rows[0]
    aliases = sorted(alias for _, _, alias, _ in rows if alias is not None)
    # Raw JSON text on both backends (Django loads PostgreSQL's jsonb as text); traits
    # edited in the admin into something other than an object are no traits.
    traits = json.loads(traits) if isinstance(traits, str) else traits
    return Person(user_id=root_user_id, user_pks=(root_pk, *aliases),
                  traits={str(key): str(value) for key, value in traits.items()}
                  if isinstance(traits, dict) else {})


def person_key() -> Func:
    """For event querysets: the primary key of the person behind each event's user (the
    person's, for a linked alias; the user's own otherwise). Counting it instead of the
    user counts a visitor who signed in once."""
    return Coalesce(F("identity_link__person_id"), F("user_id"))


def person_first_seen() -> Func:
    """For event querysets: when the person behind each event was first seen (a person's
    first_seen covers its aliases', see ingestion.services.link_identities)."""
    return Coalesce(F("identity_link__person__first_seen"), F("user__first_seen"))


def person_user_id() -> Func:
    """For event querysets: the id (``user_id``) of the person behind each event's user."""
    return Coalesce(F("identity_link__person__user_id"), F("user__user_id"))

