"""Passwords of accounts: argon2id, kept only as its PHC string (``$argon2id$v=19$m=…``).

argon2-cffi's defaults are RFC 9106's second recommended profile (t=3, 64 MiB, p=4): about
50 ms and 64 MiB per hash here, which is what makes guessing a person's password expensive.
A sign-in with an unknown user name still verifies against a fixed hash, so the answer's timing
does not tell which user names exist.
"""

from __future__ import annotations

import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.errors import InputRejected

MIN_LENGTH = 10  # NIST SP 800-63B: length, not composition rules
MAX_LENGTH = 256  # argon2 takes any length; this bounds the work a request can ask for

_HASHER = PasswordHasher()


def check_new_password(password: str) -> None:
    """Refuse a password too short or too long to set."""
    if len(password) < MIN_LENGTH:
        raise InputRejected(f"a password needs at least {MIN_LENGTH} characters", "weak-password")
    if len(password) > MAX_LENGTH:
        raise InputRejected(f"a password has at most {MAX_LENGTH} characters", "invalid")


def hash_password(password: str) -> str:
    check_new_password(password)
    return _HASHER.hash(password)


@lru_cache(maxsize=1)
def _decoy() -> str:
    return _HASHER.hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` is the one hashed; with no hash (an unknown user), the same work is
    done against a decoy and the answer is False."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(password_hash or _decoy(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
