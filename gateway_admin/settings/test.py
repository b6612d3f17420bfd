"""Test settings: fast hashing and fixed keys; the database and Redis come from the environment as in base."""

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
}
