"""PriceLoop settings: everything comes from the environment (documented in ``.env.example``).

With no variables set (and ``DEBUG=1``) PriceLoop runs on embedded defaults: a SQLite file and a
filesystem Celery broker under ``PRICELOOP_DATA_DIR``. Point ``DATABASE_URL`` at PostgreSQL and
``CELERY_BROKER_URL`` at Redis for a real deployment.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from webapp.env import env_bool, env_float, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", default=False)
DATA_DIR = Path(env_str("PRICELOOP_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Production (DEBUG off) needs a long random SECRET_KEY "
            "(or SECRET_KEY_FILE); for local development set DEBUG=1."
        )
    SECRET_KEY = "insecure-development-key-only-for-debug-mode-0123456789abcdef"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our own static files, no CDN
    "axes",  # login lockout after repeated wrong passwords (login page and admin)
    "webapp",
    "annotation",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: turns a lockout into its 429 page
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "webapp.roles.roles_context",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'priceloop.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
    )
}
# The annotator queue's few per-request statements are prepared once per connection on PostgreSQL
# (webapp/rawsql.py). Set 0 behind a transaction-mode pooler that cannot carry prepared statements
# (pgbouncer before 1.21).
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", default=True)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # SQLite is the single-writer embedded default: wait for the write lock instead of failing, and
    # take it at the start of each transaction so that read-then-write never deadlocks.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Every password set through PriceLoop (create_user, changepassword, the admin) passes these.
PASSWORD_MIN_LENGTH = env_int("PASSWORD_MIN_LENGTH", 12)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": PASSWORD_MIN_LENGTH},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes checks every password login (login page, admin) before Django does: after
# LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that pair is refused (429,
# even with the right password) for LOGIN_COOLOFF_MINUTES, or until `manage.py axes_reset_username`
# when 0. Attempts are kept in the database, so every web process sees the same count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
_cooloff_minutes = env_int("LOGIN_COOLOFF_MINUTES", 15)
AXES_COOLOFF_TIME = timedelta(minutes=_cooloff_minutes) if _cooloff_minutes > 0 else None
# One username from one address: a guesser elsewhere cannot lock a colleague out of every desk.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # a right password before the limit starts the count again
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# The address is REMOTE_ADDR, or with TRUSTED_PROXY=1 the one the proxy appended to X-Forwarded-For: a
# client-written header never decides it (webapp/lockout.py).
AXES_CLIENT_IP_CALLABLE = "webapp.lockout.client_address"
if AXES_FAILURE_LIMIT < 1:
    raise ImproperlyConfigured(f"LOGIN_FAILURE_LIMIT={AXES_FAILURE_LIMIT}: use 1 or more wrong passwords.")
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request when it is missing
# The default cache holds the API throttles' counts: shared by every web process with redis://…;
# without it (local memory) each process counts on its own.
CACHE_URL = env_str("CACHE_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
# This process's local artifact folder: the store itself by default; with object storage, where a worker
# stages what it publishes and caches what it fetches (training/storage.py).
ARTIFACT_ROOT = Path(env_str("ARTIFACT_ROOT", str(DATA_DIR / "artifacts"))).resolve()
ARTIFACTS_BACKEND = env_str("ARTIFACTS_BACKEND", "local").lower()
# Read whatever the backend, so that every variable is known to the .env.example checks.
_s3_options = {
    "bucket_name": env_str("AWS_STORAGE_BUCKET_NAME"),
    "location": env_str("AWS_LOCATION"),  # a key prefix inside the bucket
    # Any S3-compatible store (MinIO, Ceph, R2...); empty means AWS itself.
    "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
    "region_name": env_str("AWS_S3_REGION_NAME") or None,
    # Empty keys: boto3's own chain (instance role, ~/.aws, AWS_ACCESS_KEY_ID...).
    "access_key": env_secret("AWS_S3_ACCESS_KEY_ID") or None,
    "secret_key": env_secret("AWS_S3_SECRET_ACCESS_KEY") or None,
    "addressing_style": env_str("AWS_S3_ADDRESSING_STYLE") or None,
    "default_acl": None,  # private objects; the API streams them to clients
    "file_overwrite": True,  # a re-published file (a retried run) replaces its object
}
_artifacts: dict[str, Any]
if ARTIFACTS_BACKEND == "local":
    _artifacts = {"BACKEND": "training.storage.ArtifactFileStorage"}
elif ARTIFACTS_BACKEND == "s3":
    if not _s3_options["bucket_name"]:
        raise ImproperlyConfigured("ARTIFACTS_BACKEND=s3 needs AWS_STORAGE_BUCKET_NAME (an existing bucket).")
    _artifacts = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": _s3_options}
else:
    raise ImproperlyConfigured(f"ARTIFACTS_BACKEND={ARTIFACTS_BACKEND!r}: use local (a folder) or s3.")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "artifacts": _artifacts,
    # Hashed names, cached for ever by browsers; `collectstatic` writes them (and the manifest) before start.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

# --- security -----------------------------------------------------------------------------------------
# HTTPS (default on when DEBUG is off): redirect plain HTTP to HTTPS, Secure cookies, HSTS; `check --deploy`
# is clean. HTTPS=0 is the plain-HTTP mode for a private network without TLS: no redirect, cookies
# without Secure, no HSTS, and the four `check --deploy` warnings about exactly those settings silenced
# (security.W004/W008/W012/W016); every other deploy check still applies.
HTTPS = env_bool("HTTPS", default=not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=HTTPS and not DEBUG)
# Django then takes "X-Forwarded-Proto: https" as proof that the client spoke HTTPS. Only a proxy in front
# of every request may say so: trusted without one, anyone reaching gunicorn directly could claim HTTPS.
TRUSTED_PROXY = env_bool("TRUSTED_PROXY", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if TRUSTED_PROXY else None
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS and not DEBUG else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS and not DEBUG
SECURE_HSTS_PRELOAD = HTTPS and not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS: list[str] = []
if not HTTPS:
    # What plain-HTTP mode turns off on purpose (see above); nothing else is silenced.
    SILENCED_SYSTEM_CHECKS += ["security.W004", "security.W008", "security.W012", "security.W016"]
# Content-Security-Policy on every response (django-csp): scripts, styles and everything else only from
# our own origin, never inline and never eval'd, so that text which slips into a page cannot run. Pages
# keep their scripts and styles in static files; htmx runs with eval and script tags off (its
# `htmx-config` meta in annotation/annotate.html). The API docs page adds only what Swagger UI needs
# (webapp/api_docs.py). tests/e2e fail on any violation a page reports.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- REST API ---------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "webapp.authentication.TokenRolesAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "webapp.schema.PriceLoopAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "webapp.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "webapp.api.exception_handler",
    # No default throttle classes: the registry and export views name theirs (webapp/tokens.py), the
    # annotators' loop (next/submit) has none.
}
# Requests per client or reviewer (per user) on the registry and export endpoints, e.g. 600/minute;
# "off" turns it off. Counted in the default cache (CACHE_URL).
API_THROTTLE_RATE = env_str("API_THROTTLE_RATE", "600/minute")
if API_THROTTLE_RATE != "off" and not re.fullmatch(
    r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", API_THROTTLE_RATE
):
    raise ImproperlyConfigured(
        f"API_THROTTLE_RATE={API_THROTTLE_RATE!r}: use N/second, N/minute, N/hour, N/day or off."
    )
# Days an API token is valid after it was made (manage.py rotate_token makes a new one); 0: forever.
API_TOKEN_TTL_DAYS = env_int("API_TOKEN_TTL_DAYS", 0)
if API_TOKEN_TTL_DAYS < 0:
    raise ImproperlyConfigured(f"API_TOKEN_TTL_DAYS={API_TOKEN_TTL_DAYS}: use 0 (never expire) or more days.")
SPECTACULAR_SETTINGS = {
    "TITLE": "PriceLoop API",
    "DESCRIPTION": "Model versions, training runs, batches, products and annotations.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "status" field with different choices: name each enum after its model.
    "ENUM_NAME_OVERRIDES": {
        "VersionStatusEnum": "training.models.VersionStatus",
        "RunStatusEnum": "training.models.RunStatus",
        "BatchStatusEnum": "training.models.BatchStatus",
        "RecipeEnum": "training.models.Recipe",  # a batch's recipe and a run's kind: one choice set
    },
}

# --- Celery -----------------------------------------------------------------------------------------
# The embedded default broker is kombu's filesystem transport: no server, and a real worker process
# still takes the tasks. Production uses Redis (CELERY_BROKER_URL=redis://…).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
_broker_dir = DATA_DIR / "broker"
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
CELERY_BROKER_TRANSPORT: str | None = None  # None: the URL's scheme names the transport
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's class with atomic file writes: its own lets the worker read a half-written message and
    # die with "Unrecoverable error: JSONDecodeError" (webapp/broker.py says how).
    CELERY_BROKER_TRANSPORT = "webapp.broker:Transport"
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # An idle worker looks at the queue folder this often; kombu's default is 1 s.
        "polling_interval": env_float("CELERY_BROKER_POLLING_INTERVAL", 1.0),
    }
elif CELERY_BROKER_URL.startswith("redis"):
    # A task not acknowledged within this time is redelivered; it must outlast the longest training
    # run, or a late-acked training task would start a second time on another worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 4 * 3600)}
# Results are not used to pass data (tasks write to the database); keep them for debugging only.
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "") or None
CELERY_RESULT_EXPIRES = 3600
# JSON only: pickle would let anyone who can write to the broker run code in the workers.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Ids in, one service call: the default is a short CPU task. Long tasks set their own limits.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)
# Late acknowledgement is opted into per task (only idempotent ones): each task module's docstring
# (workers/pipeline.py, workers/training.py, …) states its failure policy and why.
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a training task must not sit reserved behind another
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
TRAIN_TIME_LIMIT_S = env_int("TRAIN_TIME_LIMIT_S", 4 * 3600)

# --- product settings --------------------------------------------------------------------------------
TEST_SPLIT_FRACTION = env_float("TEST_SPLIT_FRACTION", 0.2)
CATALOGUE_MAX_TEXT_CHARS = env_int("CATALOGUE_MAX_TEXT_CHARS", 1500)
BASE_MODEL = env_str("BASE_MODEL", str(DATA_DIR / "base-tiny"))

# --- annotation queue (annotation/conf.py reads these; see .env.example for what each means) -----------
ANNOTATION_OVERLAP = env_int("ANNOTATION_OVERLAP", 1)
ANNOTATION_OVERLAP_SHARE = env_float("ANNOTATION_OVERLAP_SHARE", 0.0)
ANNOTATION_GOLD_RATE = env_float("ANNOTATION_GOLD_RATE", 0.1)
ANNOTATION_GOLD_TOLERANCE = env_float("ANNOTATION_GOLD_TOLERANCE", 0.2)
ANNOTATION_GOLD_MIN_SEEN = env_int("ANNOTATION_GOLD_MIN_SEEN", 5)
ANNOTATION_GOLD_ACCURACY_MIN = env_float("ANNOTATION_GOLD_ACCURACY_MIN", 0.6)
ANNOTATION_BLIND_SHARE = env_float("ANNOTATION_BLIND_SHARE", 0.1)
ANNOTATION_LEASE_TTL_S = env_int("ANNOTATION_LEASE_TTL_S", 600)
ANNOTATION_UNDO_WINDOW_S = env_int("ANNOTATION_UNDO_WINDOW_S", 300)
ANNOTATION_TOLERANCE_ABS = env_float("ANNOTATION_TOLERANCE_ABS", 5.0)
ANNOTATION_TOLERANCE_REL = env_float("ANNOTATION_TOLERANCE_REL", 0.1)
ANNOTATION_ROUTING = env_str("ANNOTATION_ROUTING", "entropy")
ANNOTATION_CONFIRM_FACTOR = env_float("ANNOTATION_CONFIRM_FACTOR", 10.0)
ANNOTATION_GOLD_POOL_MIN = env_int("ANNOTATION_GOLD_POOL_MIN", 20)
ANNOTATION_PREFETCH = env_bool("ANNOTATION_PREFETCH", default=True)

# --- retraining pipeline (training/services read these; see .env.example for what each means) ---------
RETRAIN_MIN_BATCH_SIZE = env_int("RETRAIN_MIN_BATCH_SIZE", 20)
RETRAIN_BATCH_EVERY_S = env_int("RETRAIN_BATCH_EVERY_S", 300)
RETRAIN_RECIPE = env_str("RETRAIN_RECIPE", "tiny")
RETRAIN_RECIPE_OVERRIDES = env_str("RETRAIN_RECIPE_OVERRIDES", "")
RETRAIN_REPLAY_SHARE = env_float("RETRAIN_REPLAY_SHARE", 0.0)
# What a candidate starts from: "base" (a fresh adapter on the base, trained on every label so far: the seed
# set and all approved batches, the newest label of a product winning) or "champion" (the champion's adapter,
# tuned on the new batch plus the replay share). "base" by default: tuned on one small batch the champion
# forgets what it knew, and a batch whose candidate the gate rejects is never learnt again (demo, 114
# labels: v1 $100 -> $159; docs/learning-loop.md).
RETRAIN_FROM = env_str("RETRAIN_FROM", "base").strip().lower()
if RETRAIN_FROM not in ("champion", "base"):
    raise ImproperlyConfigured(f"RETRAIN_FROM={RETRAIN_FROM!r}: use champion or base.")
RETRAIN_RUN_LEASE_S = env_int("RETRAIN_RUN_LEASE_S", 120)
RETRAIN_RUN_STALE_S = env_int("RETRAIN_RUN_STALE_S", 300)
# Recovery (training/services/recovery.py): how often the beat looks for runs whose step has no live
# task, how old a sent task may get before it is sent again, and how often a run whose worker was lost
# is retried from its last checkpoint before it stays failed (a reviewer can still retry it).
RUN_RECOVER_EVERY_S = env_float("RUN_RECOVER_EVERY_S", 30.0)
RUN_RESEND_AFTER_S = env_int("RUN_RESEND_AFTER_S", 600)
RUN_MAX_RETRIES = env_int("RUN_MAX_RETRIES", 2)
# Seconds to wait for the model hub before a base model that cannot be reached fails its run.
HUB_TIMEOUT_S = env_float("HUB_TIMEOUT_S", 10.0)
RETRAIN_EVAL_MAX_ITEMS = env_int("RETRAIN_EVAL_MAX_ITEMS", 0)
# Training processes per run on a `train` worker (DDP through torchrun: one per GPU; gloo on CPU).
RETRAIN_NPROC = env_int("RETRAIN_NPROC", 1)
if RETRAIN_NPROC < 1:
    raise ImproperlyConfigured(f"RETRAIN_NPROC={RETRAIN_NPROC}: use 1 (one process) or the GPU count.")
RETRAIN_GOLD_ACCURACY_MIN = env_float("RETRAIN_GOLD_ACCURACY_MIN", 0.7)
RETRAIN_OUT_OF_RANGE_MAX_SHARE = env_float("RETRAIN_OUT_OF_RANGE_MAX_SHARE", 0.02)
GATE_MIN_DELTA = env_float("GATE_MIN_DELTA", 1.0)
GATE_ALPHA = env_float("GATE_ALPHA", 0.05)
GATE_TEST = env_str("GATE_TEST", "bootstrap")
GUESS_BATCH_SIZE = env_int("GUESS_BATCH_SIZE", 64)
GUESS_REGUESS_POOL = env_bool("GUESS_REGUESS_POOL", default=False)
LANGSMITH_API_KEY = env_secret("LANGSMITH_API_KEY")
LANGSMITH_ENDPOINT = env_str("LANGSMITH_ENDPOINT", "")
LANGSMITH_PROJECT = env_str("LANGSMITH_PROJECT", "priceloop")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Time, level and logger on every line, so an operator can grep a component (e.g. webapp.lockout).
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # On CPUs with AVX512-BF16, bitsandbytes warns at import that it could not fetch a kernel from the
        # model hub (`pip install kernels`); PriceLoop never fetches code from the hub, and 4-bit on CPU
        # works without it. The warning alarmed demo users; errors still show.
        "bitsandbytes.backends.cpu.ops": {"level": "ERROR"},
    },
}
