"""Tuning and validation halves of every evaluation set.

Settings (thresholds, levels, padding) are chosen on the tuning half only; what is reported as the
result is the validation half, which no choice looked at. A clip's half depends on its key alone (a
hash with the fixed seed below), so it never changes as a set grows or is reordered.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from .common import Clip

SEED = "voicenav-2026-12"
Half = Literal["tuning", "validation"]
HALVES: tuple[Half, ...] = ("tuning", "validation")


def half_of(set_name: str, key: str) -> Half:
    digest = hashlib.sha256(f"{SEED}/{set_name}/{key}".encode()).digest()
    return "tuning" if digest[0] < 128 else "validation"


def split(clips: list[Clip]) -> dict[Half, list[Clip]]:
    out: dict[Half, list[Clip]] = {h: [] for h in HALVES}
    for c in clips:
        out[half_of(c.set, c.key)].append(c)
    return out
