"""The encoding of "silence after the speech", computed once per model and shared by every utterance.

Whisper is trained on 30 s windows: after the speech, the decoder expects to see the encoding of the
padding, and without it (an encoder run on the utterance alone) it keeps talking, repeating itself.
Encoding the full window costs ~10x more than the utterance. Instead the utterance (plus a short
tail) is encoded on its own and the decoder also attends to the encoding of an all-padding window at
the positions after it. Features are brought to one peak level first, so the padding value, and with
it this encoding, is the same for every input; the decoder reads it once per step for the whole
batch (`Searcher` takes it as a `SharedTail`).
"""

from __future__ import annotations

import numpy as np

from .decoding.search import SharedTail
from .engines.base import Engine

# Peak log10 mel power features are normalized to (typical of telephone speech; the WER of the
# Asterisk and caller sets moved by less than 0.5 points between levels 1.0 and 1.5).
LEVEL = 1.5
PAD_VALUE = (LEVEL - 8.0 + 4.0) / 4.0


def silence_tail(engine: Engine, n_mels: int, frames: int, n_head: int) -> SharedTail:
    """Cross-attention keys and values (frames / 2 positions) of a window holding only padding."""
    k, v = engine.encode(np.full((1, n_mels, frames), PAD_VALUE, dtype=np.float32))
    return SharedTail.of(k[:, 0], v[:, 0], n_head)
