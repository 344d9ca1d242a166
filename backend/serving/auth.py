"""The bearer token that guards the endpoint's adapter management routes.

It is TUNELAB_API_TOKEN when set, else one generated once and kept in the home with
mode 600; the serving endpoint, the studio service and the CLI all read it here.
"""

from __future__ import annotations

import os
import secrets

from backend.settings import Settings


def api_token(settings: Settings) -> str:
    """The bearer token for adapter management: TUNELAB_API_TOKEN, else one stored in the home.

    The stored token is generated once and written with mode 600.
    """
    if settings.api_token:
        return settings.api_token
    path = settings.paths.api_token_file
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token
