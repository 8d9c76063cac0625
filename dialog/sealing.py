"""Dialog data at rest: AES-GCM with keys that rotate, or plaintext when no key is configured.

The key file is a mounted secret, one key per line: `<key id> <base64 of 32 random bytes>`; blank
lines and `#` comments are ignored. New data is sealed with the last key (or `active_key`); every key
in the file opens what it sealed, so a rotation appends a key and drops the old one only after the
retention period. A sealed value is `aesgcm:<key id>:<base64 nonce+ciphertext>`, bound to the Redis
key it is stored under (associated data), so a value copied to another call's key does not open.

    openssl rand -base64 32 | sed 's/^/2026-12 /' >> /run/secrets/voicenav-dialog-keys
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

_PREFIX = "aesgcm:"
_NONCE_BYTES = 12


class SealingError(ValueError):
    """A stored value that cannot be opened: unknown key id, tampered or sealed but no key configured."""


class SealingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key_file: Path | None = Field(
        default=None,
        description="AES-GCM keys (`<id> <base64 key>` lines, a mounted secret) sealing call records and dialog "
        "context in Redis; none: stored in plaintext",
    )
    active_key: str | None = Field(
        default=None, min_length=1, description="key id new data is sealed with; none: the file's last key"
    )


class Sealer:
    """Seal and open strings; without keys both are the identity (plaintext at rest)."""

    def __init__(self, keys: dict[str, bytes], active: str | None = None) -> None:
        for key_id, key in keys.items():
            if not key_id or ":" in key_id or any(c.isspace() for c in key_id):
                raise ValueError(f"bad key id {key_id!r}")
            if len(key) != 32:
                raise ValueError(f"key {key_id!r}: {len(key)} bytes, AES-256 needs 32")
        if active is None and keys:
            active = list(keys)[-1]
        if active is not None and active not in keys:
            raise ValueError(f"active key {active!r} is not in the key file")
        self._aead = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.active = active

    @property
    def encrypting(self) -> bool:
        return self.active is not None

    def seal(self, plaintext: str, bound_to: str) -> str:
        if self.active is None:
            return plaintext
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead[self.active].encrypt(nonce, plaintext.encode(), bound_to.encode())
        return f"{_PREFIX}{self.active}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, stored: str, bound_to: str) -> str:
        """The plaintext of a sealed value; a plaintext value (written before keys were configured) as is."""
        if not stored.startswith(_PREFIX):
            return stored
        key_id, _, body = stored[len(_PREFIX) :].partition(":")
        aead = self._aead.get(key_id)
        if aead is None:
            raise SealingError(f"sealed with key {key_id!r}, which is not configured")
        try:
            raw = base64.b64decode(body, validate=True)
            return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], bound_to.encode()).decode()
        except (binascii.Error, InvalidTag, UnicodeDecodeError) as exc:
            raise SealingError(f"sealed value under key {key_id!r} does not open") from exc


def read_key_file(path: Path) -> dict[str, bytes]:
    """Keys by id, in file order (blocking: call at startup)."""
    keys: dict[str, bytes] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected `<key id> <base64 key>`")
        try:
            keys[parts[0]] = base64.b64decode(parts[1], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"{path}:{number}: key is not base64") from exc
    if not keys:
        raise ValueError(f"{path}: no keys")
    return keys


def open_sealer(params: SealingParams) -> Sealer:
    """The sealer for `params` (reads the key file: call at startup)."""
    if params.key_file is None:
        log.warning("no dialog key file configured: call records and dialog context are stored in Redis in plaintext")
        return Sealer({})
    sealer = Sealer(read_key_file(params.key_file), params.active_key)
    log.info("dialog data at rest: AES-256-GCM, active key %s", sealer.active)
    return sealer
