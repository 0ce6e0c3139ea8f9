"""Developer machine and `make run`: SQLite and a server-less Celery broker unless told otherwise."""

import secrets

from .base import *  # noqa: F401,F403
from .base import VAR_DIR, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)


def _local_secret_key() -> str:
    # A per-checkout key kept out of the repository, so sessions survive restarts.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _local_secret_key()
