"""Test settings: fast hashing and fixed keys; the database and Redis come from the environment as in base."""

import os
import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import SLUICE

SECRET_KEY = "test-secret-key-not-for-production"  # noqa: S105
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
SLUICE = {
    **SLUICE,
    "SECRET_KEYS": ["4-EeuvhFWBrcspQYU2fIeA5CmBcIS_g7uLJ4Xv-dBe4="],
    "GATEWAY_TOKEN": "test-gateway-token",
    # the tests probe the mock model on loopback (webui.probe)
    "PROBE_ALLOW_LOOPBACK": True,
}

# SQLite: a file, not pytest-django's shared in-memory database, so that the live server's request threads (the
# end-to-end tests drive it from a real gateway process) each get their own connection instead of sharing one.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(Path(tempfile.gettempdir()) / f"sluice-test-{os.getpid()}.sqlite3"),
    }

# Celery workers a test starts (tests/usage/test_celery_worker.py) get a broker of their own on the shared Redis: every
# key kombu writes (queues, unacked messages, bindings) and its pub/sub channels start with this prefix, so that runs
# on the same server (another checkout, another CI job) neither take each other's tasks nor delete each other's keys.
if broker_prefix := os.environ.get("SLUICE_TEST_BROKER_PREFIX"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": broker_prefix}
