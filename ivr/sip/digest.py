"""SIP digest authentication of callers (RFC 3261 §22, RFC 7616 / RFC 8760 for SHA-256).

Nonces carry their own expiry and an HMAC with a server secret, so checking one needs no state; a
nonce authenticates one INVITE only (replays get a fresh challenge), which is also why the digest's
`uri` need not equal the Request-URI (sipp, for one, sends the server's address there). The secret is random per
process unless configured: replicas behind one address need the same `nonce_secret`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ivr.sip.message import SipRequest

Algorithm = Literal["SHA-256", "MD5"]
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)')


class DigestParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    realm: str = Field(min_length=1, description="realm of the challenges")
    users: dict[str, SecretStr] = Field(min_length=1, description="username -> password")
    # RFC 8760 §2.4: the strongest first; MD5 only for peers that know nothing else
    algorithms: tuple[Algorithm, ...] = Field(
        ("SHA-256", "MD5"), min_length=1, description="digest algorithms offered, strongest first"
    )
    nonce_ttl_s: float = Field(30.0, gt=0, description="seconds a nonce stays valid (each is used once)")
    nonce_secret: SecretStr | None = Field(
        None, description="key nonces are signed with; replicas behind one address need the same; random when unset"
    )


def parse_authorization(value: str) -> tuple[str, dict[str, str]]:
    """(scheme, params) of an Authorization header; quoted values unquoted."""
    scheme, _, rest = value.strip().partition(" ")
    params = {}
    for name, raw in _PARAM.findall(rest):
        params[name.lower()] = raw[1:-1].replace('\\"', '"') if raw.startswith('"') else raw
    return scheme, params


class DigestAuthenticator:
    def __init__(self, params: DigestParams, clock: Callable[[], float] = time.time) -> None:
        self.params = params
        secret = params.nonce_secret.get_secret_value() if params.nonce_secret else secrets.token_hex(32)
        self._secret = secret.encode()
        self._clock = clock
        self._used: dict[str, float] = {}  # nonce -> expiry, for nonces that have authenticated a request

    def _sign(self, body: str) -> str:
        return hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()[:32]

    def _nonce(self) -> str:
        body = f"{int(self._clock() + self.params.nonce_ttl_s):x}.{secrets.token_hex(8)}"
        return f"{body}.{self._sign(body)}"

    def _nonce_expiry(self, nonce: str) -> float | None:
        """The expiry of a nonce we issued, or None if we did not issue it."""
        body, _, sig = nonce.rpartition(".")
        if not body or not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            return float(int(body.split(".", 1)[0], 16))
        except ValueError:
            return None

    def challenges(self, stale: bool = False) -> list[tuple[str, str]]:
        """WWW-Authenticate headers for a 401: one per algorithm, the same nonce in each."""
        nonce = self._nonce()
        extra = ", stale=true" if stale else ""
        return [
            (
                "WWW-Authenticate",
                f'Digest realm="{self.params.realm}", nonce="{nonce}", algorithm={alg}, qop="auth"{extra}',
            )
            for alg in self.params.algorithms
        ]

    def check(self, request: SipRequest) -> Literal["ok", "missing", "stale", "wrong"]:
        """Whether `request` carries valid credentials for this realm."""
        ours = [parse_authorization(v) for v in request.headers.raw("Authorization")]
        ours = [(scheme, p) for scheme, p in ours if p.get("realm") == self.params.realm]
        if not ours:
            return "missing"
        scheme, p = ours[0]
        algorithm = p.get("algorithm", "MD5")
        password = self.params.users.get(p.get("username", ""))
        if scheme.lower() != "digest" or algorithm not in self.params.algorithms or password is None or "uri" not in p:
            return "wrong"
        nonce = p.get("nonce", "")
        expiry = self._nonce_expiry(nonce)
        if expiry is None:
            return "wrong"
        now = self._clock()
        if expiry < now or nonce in self._used:
            return "stale"
        h = _HASHES[algorithm]

        def hex_of(text: str) -> str:
            return h(text.encode()).hexdigest()

        ha1 = hex_of(f"{p['username']}:{self.params.realm}:{password.get_secret_value()}")
        ha2 = hex_of(f"{request.method}:{p['uri']}")
        qop = p.get("qop")
        if qop == "auth":
            expected = hex_of(f"{ha1}:{nonce}:{p.get('nc', '')}:{p.get('cnonce', '')}:auth:{ha2}")
        elif qop is None:
            expected = hex_of(f"{ha1}:{nonce}:{ha2}")  # RFC 2069 form, allowed by RFC 3261 §22.4
        else:
            return "wrong"
        if not hmac.compare_digest(expected, p.get("response", "")):
            return "wrong"
        self._used = {n: e for n, e in self._used.items() if e >= now}
        self._used[nonce] = expiry
        return "ok"
