"""Base settings shared by every environment. Everything a deployment changes is read from the environment.

See https://docs.djangoproject.com/en/5.2/ref/settings/ for the meaning of each Django setting.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# `make run` writes generated secrets to .env on first start; a real deployment sets the variables instead.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# GENERAL
# ------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", False)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# DATABASES
# ------------------------------------------------------------------------------
# The embedded default is SQLite under var/; production and CI set DATABASE_URL (PostgreSQL).
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'sluice.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = True


def ensure_sqlite_dir(database: dict) -> None:
    """Create the folder of a file-backed SQLite database (mode 0700: it holds the database and the admin password).

    A fresh clone has no var/ (git ignores it), and SQLite cannot create the folder itself; every command that opens
    the database (runsluice, migrate, createsuperuser, …) loads these settings first, so this is the one place.
    """
    name = str(database.get("NAME") or "")
    if not database["ENGINE"].endswith("sqlite3") or not name or name == ":memory:" or name.startswith("file:"):
        return
    Path(name).parent.mkdir(mode=0o700, parents=True, exist_ok=True)


ensure_sqlite_dir(DATABASES["default"])


SQLITE_CONN_MAX_AGE = 600  # seconds


def configure_sqlite(database: dict, timeout: float) -> None:
    """Make SQLite queue concurrent writers instead of failing with "database is locked" (README, Production).

    The embedded default has several processes on one file (gunicorn workers and their threads; the gateway's usage
    posts and heartbeats while an admin edits), and every request is a transaction (ATOMIC_REQUESTS). In SQLite's
    default DEFERRED mode a transaction that read first and then writes cannot wait for another writer: SQLite fails it
    at once, without calling the busy handler, since waiting could deadlock (and in WAL mode its snapshot is stale).
    So every transaction begins IMMEDIATE (takes the write lock at BEGIN, waiting up to ``timeout`` seconds for it),
    and the journal is WAL, so that reads outside a transaction neither wait for a writer nor hold one up. The WAL
    switch is not an ``init_command``: run by several processes at once on a file not yet in WAL it fails some of them
    with "database is locked", so each new connection checks the mode first and retries a switch that lost the race
    (``gateway_admin.sqlite``).

    Connections are kept between requests (``CONN_MAX_AGE``, unless ``DATABASE_URL`` sets ``conn_max_age``): closing
    the last connection to the file checkpoints the WAL into it and deletes the WAL, so a connection per request
    costs a checkpoint (with its fsyncs) and a reopen per request, about 3.5 ms of CPU per usage POST. Kept, the WAL is
    checkpointed by SQLite every 1,000 pages. An open connection holds nothing between requests: each request's
    transaction ends with the request (ATOMIC_REQUESTS), and Django closes a connection left unusable by an error.
    """
    if not database["ENGINE"].endswith("sqlite3"):
        return
    database.setdefault("CONN_MAX_AGE", SQLITE_CONN_MAX_AGE)
    options = database.setdefault("OPTIONS", {})
    options.setdefault("transaction_mode", "IMMEDIATE")
    options.setdefault("timeout", timeout)


configure_sqlite(DATABASES["default"], env.float("SLUICE_SQLITE_TIMEOUT", 20.0))

# APPS
# ------------------------------------------------------------------------------
DJANGO_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
THIRD_PARTY_APPS = [
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "formtools",
    "django_ace",  # the policy editor's code editor (static files only)
]
LOCAL_APPS = [
    "gateway_admin",
    "named_values",
    "backends",
    "apis",
    "subscriptions",
    "policies",
    "usage",
    "content_safety",
]
# The web UI holds no configuration of its own (no models, no permissions): views, forms and templates only.
UI_APPS = ["webui"]
INSTALLED_APPS = DJANGO_APPS + THIRD_PARTY_APPS + LOCAL_APPS + UI_APPS

# MIDDLEWARE
# ------------------------------------------------------------------------------
MIDDLEWARE = [
    # First: strips forwarding headers that no trusted proxy wrote, before anything reads them.
    "gateway_admin.middleware.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "gateway_admin.urls"
WSGI_APPLICATION = "gateway_admin.wsgi.application"

# REVERSE PROXY  (docs/deployment.md)
# ------------------------------------------------------------------------------
# Behind a TLS-terminating proxy Django sees plain HTTP: the proxy's X-Forwarded-Proto tells it the client used HTTPS
# (https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header). Opt-in, and only believed from
# SLUICE_TRUSTED_PROXIES (see gateway_admin.middleware.TrustedProxyMiddleware).
if env.bool("SLUICE_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Origins, such as "https://sluice.example.com", that may POST forms (the admin) when the proxy's public name is not
# the Host the management plane sees. https://docs.djangoproject.com/en/5.2/ref/settings/#csrf-trusted-origins
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
USE_X_FORWARDED_HOST = env.bool("DJANGO_USE_X_FORWARDED_HOST", False)

# TEMPLATES
# ------------------------------------------------------------------------------
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

# STATIC
# ------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    # single browser assets shipped inside Python packages (plotly.js), under vendor/ (webui/staticfiles.py)
    "webui.staticfiles.PackageFileFinder",
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# AUTH
# ------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# The web UI's own login page (docs/web-ui.md); the Django admin keeps its own at /admin/login/.
LOGIN_URL = "webui:login"
LOGIN_REDIRECT_URL = "webui:index"
LOGOUT_REDIRECT_URL = "webui:login"

# REST FRAMEWORK  https://www.django-rest-framework.org/api-guide/settings/
# ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["gateway_admin.api.permissions.ModelPermissions"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "gateway_admin.api.schema.SluiceAutoSchema",
    "EXCEPTION_HANDLER": "gateway_admin.exceptions.exception_handler",
    "DEFAULT_PARSER_CLASSES": ["gateway_admin.api.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
# Request bodies above this size are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("SLUICE_MAX_REQUEST_BYTES", 1024 * 1024)

SPECTACULAR_SETTINGS = {
    "TITLE": "Sluice management API",
    "DESCRIPTION": "Import language-model APIs, manage backends, named values, products, subscriptions and policies.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# CELERY  https://docs.celeryq.dev/en/stable/userguide/configuration.html
# ------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
# Without Redis (the embedded default) tasks run in-process at the call site.
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# `expires` drops runs that queued up while no worker was there to take them: the next run does their work.
CELERY_BEAT_SCHEDULE = {
    "usage-ingest-stream": {
        "task": "usage.tasks.ingest_usage_stream",
        "schedule": 2.0,
        "options": {"expires": 10},
    },
    "usage-purge-dedupe": {
        "task": "usage.tasks.purge_usage_dedupe",
        "schedule": 3600.0,
        "options": {"expires": 600},
    },
}

# LOGGING
# ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
}

# SLUICE  product settings, one namespace (as DRF does with REST_FRAMEWORK)
# ------------------------------------------------------------------------------
SLUICE = {
    # Fernet keys (urlsafe base64, comma separated) for secrets at rest; the first encrypts, all decrypt.
    "SECRET_KEYS": env.list("SLUICE_SECRET_KEYS", default=[]),
    # Shared token the gateways present to pull the configuration snapshot.
    "GATEWAY_TOKEN": env("SLUICE_GATEWAY_TOKEN", default=""),
    # Public base URL of the gateway, shown in the UI and in `make run` output.
    "GATEWAY_URL": env("SLUICE_GATEWAY_URL", default="http://127.0.0.1:8080"),
    # Redis stream the gateways append usage records to (gateway.usage.record.DEFAULT_STREAM); read by usage.tasks.
    "USAGE_STREAM": env("SLUICE_USAGE_STREAM", default="sluice:usage"),
    # How long counted request ids are remembered to drop re-delivered usage records. Records that started
    # longer ago than this are refused, since they could no longer be told from duplicates.
    "USAGE_DEDUPE_HOURS": env.int("SLUICE_USAGE_DEDUPE_HOURS", 48),
    # Peers (addresses or networks) whose X-Forwarded-* / Forwarded headers are believed; others' are dropped.
    "TRUSTED_PROXIES": env.list("SLUICE_TRUSTED_PROXIES", default=["127.0.0.1/32", "::1/128"]),
    # The wizard's Test connection (webui.probe): loopback URLs (the local mock model; `make run` turns it on) and
    # link-local / cloud metadata addresses are refused unless allowed here.
    "PROBE_ALLOW_LOOPBACK": env.bool("SLUICE_PROBE_ALLOW_LOOPBACK", False),
    "PROBE_ALLOW_LINK_LOCAL": env.bool("SLUICE_PROBE_ALLOW_LINK_LOCAL", False),
    # The local embeddings server (`python -m embeddings`, started by `make run`): its port, and the URL of the
    # backend the import wizard creates for `"semantic_cache": {"embeddings_backend": "local"}`.
    "EMBEDDINGS_PORT": env.int("SLUICE_EMBEDDINGS_PORT", 18100),
}
SLUICE["LOCAL_EMBEDDINGS_URL"] = env(
    "SLUICE_LOCAL_EMBEDDINGS_URL", default=f"http://127.0.0.1:{SLUICE['EMBEDDINGS_PORT']}/v1/embeddings"
)
