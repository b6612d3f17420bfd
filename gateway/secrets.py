"""Key hashing and the snapshot encryption key, shared by both planes.

The management plane imports these to hash subscription keys and to encrypt secret named values
for the snapshot; the gateway uses them to look keys up and to decrypt. Never import Django here.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ("SNAPSHOT_HKDF_INFO", "SNAPSHOT_HKDF_SALT", "hash_key", "snapshot_fernet")

SNAPSHOT_HKDF_SALT = b"sluice-snapshot-v1"
SNAPSHOT_HKDF_INFO = b"named-values"


def hash_key(key: str) -> str:
    """SHA-256 hex digest of a subscription key (UTF-8)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def snapshot_fernet(gateway_token: str) -> Fernet:
    """The Fernet that encrypts secret named values inside a snapshot, derived from the gateway token."""
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=SNAPSHOT_HKDF_SALT,
        info=SNAPSHOT_HKDF_INFO,
    ).derive(gateway_token.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(derived))
