"""The API token: DECKSTREAM_API_TOKEN, or one generated at first start and kept in home."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_token(home: Path, configured: str | None) -> str:
    if configured:
        return configured
    path = home / "api-token"
    if path.exists() and (token := path.read_text().strip()):
        return token
    home.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token
