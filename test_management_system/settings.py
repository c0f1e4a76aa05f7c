"""Settings, read from the environment only (``.env.example`` lists every variable).

``TMS_ENV`` picks the profile: ``development`` (default: SQLite and a file-system broker under
``var/``, secrets generated and kept there), ``test`` (the same, with a fast password hasher) or
``production`` (refuses to start without the secrets, HTTPS-only defaults).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
_dotenv = BASE_DIR / ".env"
if _dotenv.is_file():
    # Real environment variables win over the file.
    environ.Env.read_env(str(_dotenv), overwrite=False)

ENVIRONMENT = env.str("TMS_ENV", default="development")
if ENVIRONMENT not in {"development", "test", "production"}:
    raise ImproperlyConfigured(
        f"TMS_ENV must be development, test or production, not {ENVIRONMENT!r}."
    )
PRODUCTION = ENVIRONMENT == "production"
TESTING = ENVIRONMENT == "test"

VAR_DIR = Path(env.str("TMS_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
if not PRODUCTION:
    VAR_DIR.mkdir(parents=True, exist_ok=True)


def _kept_secret(env_name: str, filename: str, make: Any) -> str:
    """A secret from the environment; outside production, generated once and kept in var/."""
    value: str = env.str(env_name, default="")
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured(f"{env_name} must be set when TMS_ENV=production.")
    path = VAR_DIR / filename
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _kept_secret("SECRET_KEY", "secret_key", lambda: secrets.token_urlsafe(64))
SECRET_KEY_FALLBACKS: list[str] = env.list("SECRET_KEY_FALLBACKS", default=[])

# Machine credentials are encrypted with keys derived from SECRET_KEY and this key
# (django-fernet-encrypted-fields calls it SALT_KEY). Comma-separated: the first encrypts,
# the rest still decrypt, so a rotation adds a new first key and runs `manage.py
# rotate_credentials`.
FIELD_ENCRYPTION_KEYS: list[str] = [
    key.strip()
    for key in _kept_secret(
        "FIELD_ENCRYPTION_KEYS", "field_encryption_key", lambda: Fernet.generate_key().decode()
    ).split(",")
    if key.strip()
]
SALT_KEY = FIELD_ENCRYPTION_KEYS

DEBUG = env.bool("DEBUG", default=ENVIRONMENT == "development")
ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS", default=[] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"]
)
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when TMS_ENV=production.")
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # First, so that its registration/ templates win over the admin's.
    "test_management_system",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "machines",
    "test_runner",
    "jenkins",
    "test_runner.web",
]

MIDDLEWARE = [
    "test_management_system.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "test_management_system.urls"
WSGI_APPLICATION = "test_management_system.wsgi.application"
ASGI_APPLICATION = "test_management_system.asgi.application"

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
                "test_management_system.views.web_context",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the workers write at the same time: WAL lets readers go on while one
    # writes, IMMEDIATE transactions take the write lock up front instead of failing on upgrade.
    _db["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file, not memory, so that a real Celery worker in another process sees test data; one
    # per test process, so that two test runs on one checkout never share it.
    _db["TEST"] = {"NAME": str(VAR_DIR / f"test_db_{os.getpid()}.sqlite3")}
else:
    _db["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    _db["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Celery -------------------------------------------------------------------------------
REDIS_URL: str = env.str("REDIS_URL", default="")
CELERY_BROKER_URL: str = env.str("CELERY_BROKER_URL", default="") or REDIS_URL or "filesystem://"
CELERY_RESULT_BACKEND: str = env.str("CELERY_RESULT_BACKEND", default="") or (
    REDIS_URL
    or f"file://{VAR_DIR / (f'celery-results-test-{os.getpid()}' if TESTING else 'celery-results')}"
)
if CELERY_BROKER_URL == "filesystem://":
    # The embedded broker: messages are files, so a bare machine needs no server.
    # Each test session gets its own queue folder (its subprocesses inherit TMS_BROKER_DIR),
    # so that two sessions on one checkout never take each other's tasks.
    _broker_dir = Path(
        env.str(
            "TMS_BROKER_DIR",
            default=str(VAR_DIR / (f"broker-test-{os.getpid()}" if TESTING else "broker")),
        )
    )
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        "visibility_timeout": 3600,
        # A publisher (an API request creating a run) that finds the broker down gives up
        # after one immediate second try instead of kombu's default of retrying for
        # broker_connection_timeout (~6 s per message): the run stays QUEUED and the sweep
        # sends it (docs/RUNS.md). Workers reconnect by their own, unbounded policy.
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    }
if CELERY_RESULT_BACKEND.startswith("file://"):
    Path(CELERY_RESULT_BACKEND.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=6 * 3600)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=6 * 3600 - 60)
# Runs are long: a worker holds one message at a time, so a second run never waits behind a
# first one on a busy worker while another worker is idle.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# acks_late is set per task, only on idempotent ones.
CELERY_TASK_ACKS_LATE = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Tests get their own queue, so a development worker on the same broker never takes their tasks.
CELERY_TASK_DEFAULT_QUEUE = env.str(
    "CELERY_TASK_DEFAULT_QUEUE", default="tms-test" if TESTING else "celery"
)

# --- Machines -----------------------------------------------------------------------------
# Machines on the service's own host, without SSH (tests run as the service's user): for a
# first start and single-host labs. Off in production unless asked for.
ALLOW_LOCAL_MACHINES = env.bool("ALLOW_LOCAL_MACHINES", default=not PRODUCTION)

# --- Runs ---------------------------------------------------------------------------------
# Log text kept per run; past it, log lines are dropped with a marker (results are kept).
RUN_LOG_MAX_BYTES = env.int("RUN_LOG_MAX_BYTES", default=50 * 1024 * 1024)
# Event logs and artifacts of finished runs are dropped after this many days (runs and their
# per-test results stay).
RUN_EVENT_RETENTION_DAYS = env.int("RUN_EVENT_RETENTION_DAYS", default=90)
# A worker whose run heartbeat is older than this is presumed dead and its run is resumed
# (the worker beats every 2 s). Tests shorten it so that resuming can be watched.
RUN_STALE_HEARTBEAT_SECONDS = env.int("RUN_STALE_HEARTBEAT_SECONDS", default=8 if TESTING else 30)
# How long a running run's machine may stay unreachable over SSH before the run is given up as
# an infrastructure error (the detached runner goes on meanwhile; the worker reconnects).
RUN_RECONNECT_WINDOW_SECONDS = env.int("RUN_RECONNECT_WINDOW_SECONDS", default=300)
# A run reported by a machine (see docs/INGEST.md) that hears nothing for this long times out.
EXTERNAL_RUN_QUIET_MINUTES = env.int("EXTERNAL_RUN_QUIET_MINUTES", default=30)
# Hosts a run-finished callback may be sent to (exact names, or ".example.com" for a domain and
# its subdomains). Empty: callbacks are refused. Only these, so that the service cannot be
# pointed at internal addresses it can reach and the caller cannot (SSRF).
RUN_CALLBACK_ALLOWED_HOSTS: list[str] = env.list("RUN_CALLBACK_ALLOWED_HOSTS", default=[])

# --- Auth and API -------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="tms@localhost")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "jenkins.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + ([] if PRODUCTION else ["rest_framework.renderers.BrowsableAPIRenderer"]),
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "test_management_system.schema.ApiAutoSchema",
    "EXCEPTION_HANDLER": "test_management_system.errors.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": env.str("API_ANON_RATE", default="120/minute")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Test Management System API",
    "DESCRIPTION": "Machines, boards, venv pools, test cases, runs and Jenkins builds.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One name per choice set, so that clients get stable, meaningful enum types.
    "ENUM_NAME_OVERRIDES": {
        "MachineOsEnum": "machines.models.Machine.Os",
        # Machines and boards share it: unknown / online / offline.
        "OnlineStatusEnum": "machines.models.Machine.Status",
        "VenvStateEnum": "machines.models.Venv.State",
        "RunStatusEnum": "test_runner.models.RunStatus",
        "RunOutcomeEnum": "test_runner.models.RunOutcome",
        "RunSourceEnum": "test_runner.models.RunSource",
        "TestResultOutcomeEnum": "test_runner.models.TestResult.Outcome",
    },
}

# --- Security -----------------------------------------------------------------------------
# Behind a TLS-terminating proxy set SECURE_PROXY_SSL_HEADER_ENABLED=true.
if env.bool("SECURE_PROXY_SSL_HEADER_ENABLED", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=PRODUCTION)
# The health endpoints answer plain HTTP so that orchestrators can probe the container.
SECURE_REDIRECT_EXEMPT = [r"^health/"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=PRODUCTION)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=PRODUCTION)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=PRODUCTION)
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- I18n, static -------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Outside production, serve static files straight from the apps (no collectstatic step).
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))

# --- Logging ------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "test_management_system.logging.RequestIdFilter"}},
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s",
        },
        "json": {"()": "test_management_system.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own console handler would print every line twice.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.db.backends": {"level": "INFO"},
        "paramiko": {"level": "WARNING"},
    },
}
