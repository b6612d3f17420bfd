"""Key hashing, the snapshot encryption key and the debug-trace tokens, shared by both planes.

The management plane imports these to hash subscription keys, to encrypt secret named values
for the snapshot and to sign trace tokens; the gateway uses them to look keys up, to decrypt and to
verify. Never import Django here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ("SNAPSHOT_HKDF_INFO", "SNAPSHOT_HKDF_SALT", "TRACE_TOKEN_MAX_TTL", "hash_key", "sign_trace_token",
           "snapshot_fernet", "trace_key", "verify_trace_token")  # fmt: skip

SNAPSHOT_HKDF_SALT = b"sluice-snapshot-v1"
SNAPSHOT_HKDF_INFO = b"named-values"
TRACE_HKDF_INFO = b"debug-trace"
# A trace token is refused when it claims to live longer than this (seconds), whoever signed it.
TRACE_TOKEN_MAX_TTL = 600


def hash_key(key: str) -> str:
    """SHA-256 hex digest of a subscription key (UTF-8)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _derive(gateway_token: str, info: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=SNAPSHOT_HKDF_SALT, info=info)
    return hkdf.derive(gateway_token.encode("utf-8"))


def snapshot_fernet(gateway_token: str) -> Fernet:
    """The Fernet that encrypts secret named values inside a snapshot, derived from the gateway token."""
    return Fernet(base64.urlsafe_b64encode(_derive(gateway_token, SNAPSHOT_HKDF_INFO)))


def trace_key(gateway_token: str) -> bytes:
    """The HMAC key of debug-trace tokens, derived from the gateway token (never the token itself)."""
    return _derive(gateway_token, TRACE_HKDF_INFO)


def _trace_signature(key: bytes, api_part: bytes, expires: bytes) -> bytes:
    return hmac.new(key, b"sluice-trace-v1." + api_part + b"." + expires, hashlib.sha256).hexdigest().encode()


def sign_trace_token(key: bytes, api: str, expires: int) -> str:
    """A debug-trace token for ``api`` valid until the Unix time ``expires``: ``<api, base64url>.<expires>.<hmac>``.

    The management plane gives one to its test console; the gateway answers a request carrying it in
    ``x-sluice-trace`` with the pipeline trace, for that API only and until it expires."""
    api_part = base64.urlsafe_b64encode(api.encode("utf-8")).rstrip(b"=")
    stamp = str(int(expires)).encode("ascii")
    return b".".join((api_part, stamp, _trace_signature(key, api_part, stamp))).decode("ascii")


def verify_trace_token(key: bytes, token: bytes, api: str, now: float) -> bool:
    """Whether ``token`` is a trace token signed with ``key`` for ``api``, not expired at ``now`` (Unix time) and
    not valid for longer than TRACE_TOKEN_MAX_TTL."""
    parts = token.split(b".")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 12:
        return False
    api_part, stamp, signature = parts
    if not hmac.compare_digest(signature, _trace_signature(key, api_part, stamp)):
        return False
    if not now < int(stamp) <= now + TRACE_TOKEN_MAX_TTL:
        return False
    try:
        signed_api = base64.urlsafe_b64decode(api_part + b"=" * (-len(api_part) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return signed_api == api
