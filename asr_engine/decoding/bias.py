"""The biasing interface between the decoder and whatever supplies contextual boosts (hot words).

The decoder knows nothing of phrases: it asks a `BiasState` which tokens to boost at the next step and
advances it with the token it chose. States are immutable so that beam hypotheses can share them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class BiasState(Protocol):
    def boosts(self) -> Mapping[int, float]:
        """Additive logit boosts (token id -> boost) for the next decoding step."""
        ...

    def advance(self, token: int) -> tuple[BiasState, float]:
        """The state after `token`, and a score correction for the hypothesis.

        The correction is negative when `token` abandons a partial match whose boosts were already
        granted, so a hypothesis that only started a phrase keeps no advantage.
        """
        ...

    def prompt_text(self) -> str:
        """Phrases to offer the decoder as previous-text prompt ("" for none)."""
        ...


class Biaser(Protocol):
    def start(self) -> BiasState:
        """A fresh state for one utterance."""
        ...
