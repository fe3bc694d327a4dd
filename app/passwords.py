"""Password hashes for the dashboard sign-in (standard-library scrypt; no Streamlit here).

A hash made by ``flywheel hash-password`` reads ``scrypt$<n>$<r>$<p>$<salt>$<key>`` with a base64
salt and key. A password is checked by deriving its key again and comparing in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

__all__ = ["PasswordHashError", "hash_password", "parse_hash", "verify_password"]

#: scrypt cost: 2^15 x 8 x 1 takes about 0.1 s and 32 MiB, per OWASP's password-storage advice.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_KEY_BYTES = 32
_FORMAT = re.compile(r"scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")


class PasswordHashError(ValueError):
    """The configured password hash is not in the ``flywheel hash-password`` format."""


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 2**20, dklen=_KEY_BYTES
    )


def hash_password(password: str) -> str:
    """A self-describing scrypt hash of ``password`` with a fresh random salt."""
    if not password:
        raise ValueError("an empty password cannot protect anything")
    salt = secrets.token_bytes(16)
    key = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    encode = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(key).decode()}"


def parse_hash(encoded: str) -> tuple[bytes, int, int, int, bytes]:
    """(salt, n, r, p, key) of a hash; PasswordHashError if it is not one of ours."""
    match = _FORMAT.fullmatch(encoded.strip())
    if match is None:
        raise PasswordHashError(
            "not a hash made by `flywheel hash-password` (scrypt$n$r$p$salt$key)"
        )
    n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    if n < 2 or n & (n - 1) or n > 2**17 or not 1 <= r <= 64 or not 1 <= p <= 16:
        raise PasswordHashError(f"unusable scrypt parameters n={n} r={r} p={p}")
    return base64.b64decode(match.group(4)), n, r, p, base64.b64decode(match.group(5))


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches the hash (constant-time comparison of the derived keys)."""
    salt, n, r, p, key = parse_hash(encoded)
    return hmac.compare_digest(_derive(password, salt, n, r, p), key)
