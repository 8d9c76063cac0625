"""Hot words applied to recognition: the biasing graph for the decoder and the transcript post-pass."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from asr_engine.recognizer import Recognizer, Utterance
from hotwords.config import HotwordsConfig
from hotwords.graph import BiasGraph
from hotwords.postpass import PhraseCorrector
from hotwords.runtime import compile_entries
from hotwords.schema import Entry
from hotwords.service import Codec


@dataclass(frozen=True)
class Biasing:
    graph: BiasGraph
    corrector: PhraseCorrector
    margin: float = 8.0  # log-probability a phrase reading may lose to the transcript and still win

    @classmethod
    def from_entries(cls, entries: Iterable[Entry], codec: Codec, config: HotwordsConfig | None = None) -> Biasing:
        graph = compile_entries(entries, codec, config or HotwordsConfig())
        return cls(graph, PhraseCorrector(graph.phrases))

    def correct(self, text: str) -> str:
        return self.corrector.correct(text)[0]

    def refine(self, recognizer: Recognizer, utterance: Utterance, text: str) -> str:
        """The transcript, or a reading of it with a phrase in, when the audio supports that reading.

        Loose sound-alike spans propose readings; the recognizer scores each against the audio and a
        reading replaces the transcript only if it scores within `margin` of it: the language model
        alone would always prefer familiar words to an unknown product name.
        """
        readings = list(dict.fromkeys([self.correct(text), *self.corrector.alternatives(text)]))
        readings = [r for r in readings if r != text]
        if not readings:
            return text
        scores = recognizer.score(utterance, [text, *readings])
        best = max(range(1, len(scores)), key=scores.__getitem__)
        return readings[best - 1] if scores[best] >= scores[0] - self.margin else text
