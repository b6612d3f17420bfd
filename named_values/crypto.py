"""Encryption at rest for secrets in the control database (secret named values, subscription keys).

A MultiFernet over settings.SLUICE["SECRET_KEYS"]: the first key encrypts, every key decrypts. To rotate, prepend a new
key to SLUICE_SECRET_KEYS, run `manage.py rotate_secrets` (re-encrypts every secret with the first key), then drop
the old key.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = ("ERR_NO_KEYS", "SecretDecryptionError", "decrypt", "encrypt", "get_fernet", "rotate")

ERR_NO_KEYS = (
    "SLUICE_SECRET_KEYS is not set: secrets cannot be encrypted at rest. Generate a key with "
    '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"` '
    "and export SLUICE_SECRET_KEYS=<key> (comma separated, newest first)."
)
ERR_BAD_KEY = "SLUICE_SECRET_KEYS holds a value that is not a Fernet key (32 url-safe base64-encoded bytes)."


class SecretDecryptionError(Exception):
    """A stored secret could not be decrypted with any of the configured keys."""


def get_fernet() -> MultiFernet:
    keys = tuple(key.strip() for key in settings.SLUICE.get("SECRET_KEYS") or () if key.strip())
    return _multi_fernet(keys)


@lru_cache(maxsize=8)
def _multi_fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured(ERR_NO_KEYS)
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(ERR_BAD_KEY) from exc


def encrypt(plaintext: str) -> str:
    return get_fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return get_fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError("No configured SLUICE_SECRET_KEYS key decrypts this secret.") from exc


def rotate(token: str) -> str:
    """The same secret re-encrypted under the first key."""
    try:
        return get_fernet().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError("No configured SLUICE_SECRET_KEYS key decrypts this secret.") from exc
