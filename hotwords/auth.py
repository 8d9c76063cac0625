"""Bearer tokens of the admin API: who may change hot-word lists, and under which name."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path

TOKEN_ENV = "VOICENAV_ADMIN_TOKEN"
TOKEN_FILE_ENV = "VOICENAV_ADMIN_TOKEN_FILE"
_DEFAULT_IDENTITY = "admin"


class AdminAuth:
    """Named tokens (identity -> token). The identity becomes `updated_by` of what its holder changes."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        if not tokens:
            raise ValueError("no admin token configured")
        for identity, token in tokens.items():
            if not identity or not token:
                raise ValueError("admin identities and tokens must not be empty")
        self._tokens = [(identity, token.encode()) for identity, token in tokens.items()]

    @classmethod
    def parse(cls, text: str) -> AdminAuth:
        """Token file content: `name:token` per line; a line without a colon is the token of `admin`.
        Blank lines and `#` comments are skipped."""
        tokens: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            identity, sep, token = line.partition(":")
            identity, token = (identity.strip(), token.strip()) if sep else (_DEFAULT_IDENTITY, identity)
            if not identity or not token:
                raise ValueError(f"admin token file line {number}: expected `name:token`")
            if identity in tokens:
                raise ValueError(f"admin token file line {number}: identity {identity!r} listed twice")
            tokens[identity] = token
        return cls(tokens)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AdminAuth:
        """From `VOICENAV_ADMIN_TOKEN_FILE` (a mounted secret) or else `VOICENAV_ADMIN_TOKEN`."""
        path = environ.get(TOKEN_FILE_ENV)
        if path:
            return cls.parse(Path(path).read_text(encoding="utf-8"))
        token = environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise ValueError(f"set {TOKEN_FILE_ENV} or {TOKEN_ENV} to enable the hot-word admin API")
        return cls({_DEFAULT_IDENTITY: token})

    def identify(self, authorization: str | None) -> str | None:
        """The identity of an `Authorization: Bearer <token>` header, or None."""
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        candidate = presented.strip().encode()
        found = None
        # Compare against every token so the time taken does not tell which one nearly matched.
        for identity, token in self._tokens:
            if hmac.compare_digest(candidate, token) and found is None:
                found = identity
        return found
