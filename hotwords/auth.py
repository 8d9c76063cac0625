"""Bearer tokens of the HTTP API: who holds which token, and which roles it grants.

The token file lists one token a line: `name:role[,role]:token`, or the older `name:token` and a bare
`token` (the identity `admin`), both of which grant the role `admin`. Roles:
  admin      writes hot-word lists (the identity becomes `updated_by`)
  reader     reads call records and metrics
  recognize  may POST audio to /v1/recognize
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, Field, SecretStr

_DEFAULT_IDENTITY = "admin"

Role = Literal["admin", "reader", "recognize"]
ROLES: frozenset[str] = frozenset(get_args(Role))
_DEFAULT_ROLES: frozenset[str] = frozenset({"admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    identity: str
    roles: frozenset[str]


def _roles(text: str) -> frozenset[str] | None:
    """The roles of a `role[,role]` field, or None when it is not one (part of an old-form token)."""
    names = [r.strip() for r in text.split(",")]
    return frozenset(names) if names and all(n in ROLES for n in names) else None


class AuthParams(BaseModel):
    """Where the admin tokens come from; without either the admin API is off."""

    token_file: Path | None = Field(
        None,
        description="API token file (a mounted secret): `name:role[,role]:token` per line (roles admin, reader, "
        "recognize); `name:token` or a bare token grant admin",
    )
    token: SecretStr | None = Field(None, description="the `admin` identity's token, when there is no token file")


class AdminAuth:
    """Named tokens (identity -> token) with the roles each grants (default: `admin`)."""

    def __init__(self, tokens: Mapping[str, str], roles: Mapping[str, Iterable[str]] | None = None) -> None:
        if not tokens:
            raise ValueError("no admin token configured")
        roles = roles or {}
        entries: list[tuple[Principal, bytes]] = []
        for identity, token in tokens.items():
            if not identity or not token:
                raise ValueError("admin identities and tokens must not be empty")
            granted = frozenset(roles.get(identity, _DEFAULT_ROLES))
            if not granted or not granted <= ROLES:
                raise ValueError(f"identity {identity!r}: roles must be some of {sorted(ROLES)}")
            entries.append((Principal(identity, granted), token.encode()))
        self._tokens = entries

    @classmethod
    def parse(cls, text: str) -> AdminAuth:
        """Token file content, see the module docstring. Blank lines and `#` comments are skipped."""
        tokens: dict[str, str] = {}
        roles: dict[str, frozenset[str]] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            identity, sep, rest = line.partition(":")
            granted = _DEFAULT_ROLES
            if not sep:
                identity, token = _DEFAULT_IDENTITY, identity
            else:
                identity, token = identity.strip(), rest.strip()
                middle, sep2, tail = rest.partition(":")
                # `name:roles:token` only when the middle field names roles: older tokens may hold colons
                if sep2 and (named := _roles(middle)) is not None:
                    granted, token = named, tail.strip()
            if not identity or not token:
                raise ValueError(f"admin token file line {number}: expected `name:role[,role]:token`")
            if identity in tokens:
                raise ValueError(f"admin token file line {number}: identity {identity!r} listed twice")
            tokens[identity] = token
            roles[identity] = granted
        return cls(tokens, roles)

    @classmethod
    def from_params(cls, params: AuthParams) -> AdminAuth:
        """From the token file if one is set, else the single token; ValueError when neither is."""
        if params.token_file is not None:
            return cls.parse(params.token_file.read_text(encoding="utf-8"))
        token = params.token.get_secret_value().strip() if params.token is not None else ""
        if not token:
            raise ValueError("no API token or token file configured")
        return cls({_DEFAULT_IDENTITY: token})

    def authenticate(self, authorization: str | None) -> Principal | None:
        """Who presents an `Authorization: Bearer <token>` header, or None."""
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        candidate = presented.strip().encode()
        found = None
        # Compare against every token so the time taken does not tell which one nearly matched.
        for principal, token in self._tokens:
            if hmac.compare_digest(candidate, token) and found is None:
                found = principal
        return found

    def identify(self, authorization: str | None) -> str | None:
        """The identity of a token that grants `admin`, or None."""
        principal = self.authenticate(authorization)
        return principal.identity if principal is not None and "admin" in principal.roles else None
