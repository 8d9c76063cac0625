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

from dataclasses import dataclass

import numpy as np

from .decoding.search import SharedTail
from .engines.base import Engine
from .models.dims import WhisperDims


@dataclass(frozen=True)
class Splice:
    """How an utterance is joined to the shared tail."""

    # Peak log10 mel power the features are normalized to (typical of telephone speech; the WER of
    # the Asterisk and caller sets moved by less than 0.5 points between levels 1.0 and 1.5).
    level: float
    # Silence encoded with the utterance itself before the shared tail takes over: the speech's own
    # encoding must already "see" that it has ended. Too little, and the decoder hears no speech in a
    # short word or runs on past its end ("2, 3, 4, 5, 6," for "two").
    tail_frames: int

    @property
    def pad_value(self) -> float:
        return (self.level - 8.0 + 4.0) / 4.0


# Chosen on the tuning halves (bench.splits): tiny.en's 4 encoder layers settle within 1 s of
# silence. base's 6 loop with 1 s; with 3 s they no longer loop but still hear short prompts as other
# words ("Go waiting" for "call waiting", "Hamal" for "hello") or as silence, which the full 30 s
# window and faster-whisper do not: the deeper encoder's speech frames read more of the silence
# after them. 12 s brings base to faster-whisper's accuracy at under half the full window's cost.
SHALLOW = Splice(level=1.5, tail_frames=100)
DEEP = Splice(level=1.5, tail_frames=1200)


def splice_for(dims: WhisperDims) -> Splice:
    return SHALLOW if dims.n_audio_layer <= 4 else DEEP


def silence_tail(engine: Engine, dims: WhisperDims, splice: Splice, frames: int) -> SharedTail:
    """Cross-attention keys and values (frames / 2 positions) of a window holding only padding."""
    k, v = engine.encode(np.full((1, dims.n_mels, frames), splice.pad_value, dtype=np.float32))
    return SharedTail.of(k[:, 0], v[:, 0], dims.n_text_head)
