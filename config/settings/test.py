import secrets

from .base import *  # noqa: F401,F403
from .base import DATABASES, REST_FRAMEWORK, VAR_DIR, env

SECRET_KEY = secrets.token_urlsafe(50)
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
CELERY_TASK_EAGER_PROPAGATES = True
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"client_app": "100000/minute",
                                                         "events": "100000/minute"}}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not shared-cache memory: concurrency tests need SQLite's real locking.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-lodestar.sqlite3")}
MODEL_STORE = VAR_DIR / "test-models"
# Swaps happen in the request that notices them, so a test sees them at once; the
# background loading has tests of its own (tests/recommender/test_serving.py).
MODEL_LOAD_IN_BACKGROUND = False
