"""API keys: `dsk_<key_id>_<secret>`, made here, kept only as a hash.

The key id is public (it is listed, and names the key to revoke); the secret is 32 random bytes,
urlsafe base64. What is stored, on the accounts topic and in memory, is the hex SHA-256 of the
whole key. A fast hash is enough, and the right one: a slow password hash (argon2, bcrypt)
defends low-entropy secrets a person chose against guessing, and nobody guesses 256 random bits;
a fast hash keeps the check every request makes at microseconds.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass

PREFIX = "dsk_"
KEY_ID_ALPHABET = string.ascii_lowercase + string.digits  # no "_": it separates id and secret
KEY_ID_LENGTH = 12  # 62 bits: ids never collide in practice, and stay short to type
SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: `token` is shown once to whoever made it and never kept."""

    key_id: str
    token: str
    sha256: str

    def __repr__(self) -> str:  # never the secret in a log line or a traceback
        return f"IssuedKey(key_id={self.key_id!r})"


def hash_key(token: str) -> str:
    """The hex SHA-256 of a whole key: the only form in which a key is kept."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_key() -> IssuedKey:
    return issue_secret(PREFIX)


def key_id_of(token: str) -> str | None:
    """The key id of something shaped like a key, else None (no secret is looked at)."""
    return id_of(token, PREFIX)


def issue_secret(prefix: str) -> IssuedKey:
    """A bearer secret of the same shape as a key, `<prefix><id>_<secret>`: session cookies
    (`dss_`) and share links (`dsl_`) are made and kept (as a hash) like API keys."""
    public_id = "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    token = f"{prefix}{public_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return IssuedKey(key_id=public_id, token=token, sha256=hash_key(token))


def id_of(token: str, prefix: str) -> str | None:
    """The public id of `<prefix><id>_<secret>`, else None (no secret is looked at)."""
    if not token.startswith(prefix):
        return None
    public_id, sep, secret = token[len(prefix) :].partition("_")
    if not sep or not secret or not is_key_id(public_id):
        return None
    return public_id


def is_key_id(text: str) -> bool:
    return len(text) == KEY_ID_LENGTH and all(c in KEY_ID_ALPHABET for c in text)
