"""Hot words applied to recognition: the biasing graph for the decoder and the transcript post-pass."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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

    @classmethod
    def from_entries(cls, entries: Iterable[Entry], codec: Codec, config: HotwordsConfig | None = None) -> Biasing:
        graph = compile_entries(entries, codec, config or HotwordsConfig())
        return cls(graph, PhraseCorrector(graph.phrases))

    def correct(self, text: str) -> str:
        return self.corrector.correct(text)[0]
