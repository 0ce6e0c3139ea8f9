"""Settings shared by every environment; everything that varies comes from the environment."""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("LODESTAR_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# models.W040: SQLite has no covering indexes and builds Event's and UserDayRollup's covering
# indexes on their key columns alone, which is correct there, only not as fast as PostgreSQL's.
SILENCED_SYSTEM_CHECKS = ["models.W040"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "accounts",
    "ingestion",
    "recommender",
    "analytics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into its 429 reply.
    "axes.middleware.AxesMiddleware",
]

# Repeated failed logins (dashboards and admin) lock that username from that address:
# django-axes counts failures in the database, so every web process shares the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "config.client_address.login_address"

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'lodestar.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one file: WAL lets readers run beside the single writer,
    # IMMEDIATE transactions queue writers instead of failing with "database is locked".
    # synchronous=FULL: a commit is on disk before events are acknowledged (NORMAL's last
    # commits can roll back at a power loss, after the client was told they were stored).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
         "transaction_mode": "IMMEDIATE", "timeout": 30}
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Only the per-request queries that ask for it (config.db.fetch_prepared) become
    # prepared statements; psycopg never prepares anything on its own. Behind PgBouncer in
    # transaction mode this needs PgBouncer >= 1.22 (max_prepared_statements > 0).
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 2**31 - 1

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboards:overview"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["config.api.SizeLimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "config.schema.LodestarAutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["config.api.ClientAppRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "client_app": env.str("API_THROTTLE_RATE", default="6000/minute"),
        "events": env.str("EVENTS_THROTTLE_RATE", default="60000/minute"),
    },
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Lodestar API",
    "DESCRIPTION": "Event ingestion, recommendations, sentiment and product analytics.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["accounts.permissions.IsSignedIn"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

API_KEY_CUSTOM_HEADER = "HTTP_AUTHORIZATION"

# Ingestion limits (the API contract in README).
INGEST_MAX_BODY_BYTES = env.int("INGEST_MAX_BODY_BYTES", default=5 * 1024 * 1024)
INGEST_MAX_BATCH = 1000
DATA_UPLOAD_MAX_MEMORY_SIZE = INGEST_MAX_BODY_BYTES
# Proxies in front of the web processes that append the client's address to
# X-Forwarded-For (a load balancer: 1). 0: the address is the connection's own, and a
# client's X-Forwarded-For, which it may write as it likes, is ignored.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be 0 or more")

# PostHog and Segment event names that become Lodestar's item event types (README's
# mapping table); matched ignoring case, and spaces and underscores alike.
CAPTURE_EVENT_TYPES = env.dict("CAPTURE_EVENT_TYPES", default={
    "Product Viewed": "view",
    "Product Clicked": "click",
    "Product Added": "add_to_cart",
    "Order Completed": "purchase",
    "Product Reviewed": "review",
})

# API rate limits are counted in the cache: with Redis every web process shares one count;
# without it each process counts alone (Django's per-process local-memory default).
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": REDIS_URL, "KEY_PREFIX": "lodestar"}}

# Celery: the embedded default needs no server (kombu's SQLAlchemy transport over SQLite).
CELERY_BROKER_URL = env.str(
    "CELERY_BROKER_URL",
    default=REDIS_URL or f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}",
)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or None
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TRAINING_TIME_LIMIT = env.int("CELERY_TRAINING_TIME_LIMIT", default=6 * 3600)
# Tasks on the default queue (the training tasks set their own limits).
CELERY_TASK_TIME_LIMIT = env.int("CELERY_DEFAULT_TIME_LIMIT", default=600)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30

MODEL_STORE = Path(env.str("MODEL_STORE", default=str(VAR_DIR / "models")))

# Width of the two-tower embeddings. 32 scored as well as 64 on MovieLens 100K (NDCG@10
# 0.110 vs 0.106) and halves the item matrix each request scans (benchmarks/README.md).
RECOMMENDER_EMBEDDING_DIM = env.int("RECOMMENDER_EMBEDDING_DIM", default=32)

# Event type -> weight of an interaction when the recommender builds its training set.
RECOMMENDER_EVENT_WEIGHTS = env.dict(
    "RECOMMENDER_EVENT_WEIGHTS",
    cast={"value": float},
    default={"purchase": 4.0, "add_to_cart": 3.0, "click": 2.0, "rating": 2.0, "review": 2.0,
             "view": 1.0},
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# A running job without a heartbeat for this long is taken to have lost its worker.
TRAINING_HEARTBEAT_TIMEOUT = env.int("TRAINING_HEARTBEAT_TIMEOUT", default=600)
TRAINING_MAX_ATTEMPTS = env.int("TRAINING_MAX_ATTEMPTS", default=2)
# The sentiment sweep leaves reviews younger than this to the scoring task queued for them.
SENTIMENT_SWEEP_GRACE_SECONDS = env.int("SENTIMENT_SWEEP_GRACE_SECONDS", default=60)
# Fine-tuning the sentiment encoder with its head: "auto" where the encoder computes in
# bfloat16 (an Ampere-or-later GPU, or a CPU with AMX or AVX512-BF16) and a shop has
# 1,000+ training reviews; "always" (slower elsewhere); "never". recommender.ml.encoder_sentiment says why.
SENTIMENT_FINE_TUNE = env.str("SENTIMENT_FINE_TUNE", default="auto")
if SENTIMENT_FINE_TUNE not in {"auto", "always", "never"}:
    raise ImproperlyConfigured(f"SENTIMENT_FINE_TUNE must be auto, always or never, not {SENTIMENT_FINE_TUNE!r}")
# Sentiment encoder scoring with int8 weights through LiteRT, about twice TensorFlow's rate
# on a CPU: "auto" where LiteRT is installed; "never" keeps TensorFlow's own arithmetic
# (benchmarks/README.md has the macro-F1 of both). A version is scored as it was trained.
SENTIMENT_QUANTIZE = env.str("SENTIMENT_QUANTIZE", default="auto")
if SENTIMENT_QUANTIZE not in {"auto", "never"}:
    raise ImproperlyConfigured(f"SENTIMENT_QUANTIZE must be auto or never, not {SENTIMENT_QUANTIZE!r}")
# Analytics rollups: the watermark stays this far behind now, so a batch committing a
# little after its received_at was taken is not skipped; /readyz reports events waiting
# longer than ANALYTICS_ROLLUP_MAX_LAG_SECONDS. Without rollups every read scans raw events.
ANALYTICS_ROLLUP_LAG_SECONDS = env.int("ANALYTICS_ROLLUP_LAG_SECONDS", default=60)
ANALYTICS_ROLLUP_MAX_LAG_SECONDS = env.int("ANALYTICS_ROLLUP_MAX_LAG_SECONDS", default=600)
ANALYTICS_USE_ROLLUPS = env.bool("ANALYTICS_USE_ROLLUPS", default=True)
# A dashboard or analytics API statement running longer than this is stopped (PostgreSQL's
# statement_timeout, an interrupt from a progress handler on SQLite; 0: no limit) and
# answered 503 `query_timeout`, so that a wide question over a large log cannot hold a web
# thread or load the database ingestion writes to.
ANALYTICS_STATEMENT_TIMEOUT_SECONDS = env.float("ANALYTICS_STATEMENT_TIMEOUT_SECONDS",
                                                default=30.0)
if ANALYTICS_STATEMENT_TIMEOUT_SECONDS < 0:
    raise ImproperlyConfigured("ANALYTICS_STATEMENT_TIMEOUT_SECONDS must be 0 (no limit) or more")
# Event property keys whose values the rollups count per day and event type, so trends
# broken down by one of them, or filtered on one, add up days instead of reading every
# event's properties. A key added here is counted over the whole log by the next update;
# one taken out is dropped. Every process that runs updates needs the same list.
ANALYTICS_ROLLUP_PROPERTIES = [key.strip() for key in env.list("ANALYTICS_ROLLUP_PROPERTIES",
                                                               default=[]) if key.strip()]
if any(len(key) > 255 for key in ANALYTICS_ROLLUP_PROPERTIES):
    raise ImproperlyConfigured("ANALYTICS_ROLLUP_PROPERTIES keys are at most 255 characters")
# A key of ANALYTICS_ROLLUP_PROPERTIES with more values than this on one day (an order id,
# a URL) is not counted: its rows would outnumber the events they sum and slow every update.
# Its trends read raw events; the operations page names it. Changing this retries a refused
# key. Every process that runs updates needs the same limit.
ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES = env.int("ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES",
                                               default=1000)
if ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES < 1:
    raise ImproperlyConfigured("ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES must be 1 or more")
# How often a web process looks for a newly promoted model version (hot swap), and whether
# a process already serving loads it in a background thread (the previous version answers
# meanwhile) instead of in the request that noticed it. A background load running longer
# than MODEL_LOAD_TIMEOUT_SECONDS is logged and reported by /readyz (it cannot be stopped;
# a restart loads the version afresh).
MODEL_REFRESH_SECONDS = env.float("MODEL_REFRESH_SECONDS", default=5.0)
MODEL_LOAD_IN_BACKGROUND = env.bool("MODEL_LOAD_IN_BACKGROUND", default=True)
MODEL_LOAD_TIMEOUT_SECONDS = env.float("MODEL_LOAD_TIMEOUT_SECONDS", default=600.0)
