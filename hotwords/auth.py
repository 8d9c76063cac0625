"""Bearer tokens of the admin API: who may change hot-word lists, and under which name."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

_DEFAULT_IDENTITY = "admin"


class AuthParams(BaseModel):
    """Where the admin tokens come from; without either the admin API is off."""

    token_file: Path | None = Field(
        None, description="admin token file (a mounted secret): `name:token` per line, or one bare token"
    )
    token: SecretStr | None = Field(None, description="the `admin` identity's token, when there is no token file")


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
    def from_params(cls, params: AuthParams) -> AdminAuth:
        """From the token file if one is set, else the single token; ValueError when neither is."""
        if params.token_file is not None:
            return cls.parse(params.token_file.read_text(encoding="utf-8"))
        token = params.token.get_secret_value().strip() if params.token is not None else ""
        if not token:
            raise ValueError("no admin token or token file configured")
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
