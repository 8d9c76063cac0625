"""Hot words applied to recognition: the biasing graph for the decoder and the transcript post-pass;
and the vocabulary of a node's closed grammar (digits, yes/no) for the decoder."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from asr_engine.decoding.vocabulary import Vocabulary
from asr_engine.recognizer import Recognizer, Transcript, Utterance
from asr_engine.tokenizer import WhisperTokenizer
from dialog.grammars import vocabulary
from dialog.intents import command_words
from hotwords.config import HotwordsConfig
from hotwords.graph import BiasGraph
from hotwords.postpass import PhraseCorrector, decoys
from hotwords.runtime import compile_entries
from hotwords.schema import Entry
from hotwords.service import Codec


@dataclass(frozen=True)
class Biasing:
    graph: BiasGraph
    corrector: PhraseCorrector
    # Log-probability a reading with a phrase may lose to the transcript and still replace it: the
    # language model alone always prefers familiar words to an unknown product name. With `_gate` in
    # place, 12 and 16 find the same 13 of the 15 names on the callers_dev tuning half (`bench/splits.py`),
    # and no Asterisk recording of that half has a reading within 20 nats of its transcript.
    margin: float = 12.0
    # How much a phrase, put into the unbiased reading, may lose to that reading with the phrases as
    # context and still stand (`_gate`). Chosen on the callers_dev tuning half with its lists changed
    # so that each caller names an unlisted product (the caller's name taken off the list, or swapped
    # for an invented one with the same last word, "Pexsolqui Unlimited"): the names found lose by at
    # most 7.6 nats, the listed names that beat all their decoys there but were not said, 16.7 or more:
    # the middle.
    plain_margin: float = 12.0
    # Invented names of a phrase's shape (`postpass.decoys`) it must be heard better than, without the
    # phrases as context (where none of them is known). Not tuned: a name that sounds no more like the
    # audio than a made-up one was not heard. On that tuning half it keeps out every listed name
    # written for an unlisted product that `plain_margin` lets through, and costs recordings one name
    # of 15 (the unbiased decode heard "mine out of all the key"), call turns none.
    decoys: int = 8
    # Mean token log-probability below which a transcript counts as unsure: the prompted decode is
    # tried for it even without a sound-alike span (about a quarter of the Asterisk recordings).
    unsure_logprob: float = -0.6
    # Above this mean token log-probability the decoder was sure of what it heard: only the strict
    # post-pass applies (half of the real Asterisk utterances; few transcripts that miss a name).
    sure_logprob: float = -0.3
    # Whether `weigh` (a call's turn) checks names with `_gate` too (`HotwordsConfig.gate_calls`).
    gate_calls: bool = False

    @classmethod
    def from_entries(cls, entries: Iterable[Entry], codec: Codec, config: HotwordsConfig | None = None) -> Biasing:
        graph = compile_entries(entries, codec, config or HotwordsConfig())
        return cls(graph, PhraseCorrector(graph.phrases))

    def correct(self, text: str) -> str:
        return self.corrector.correct(text)[0]

    def refine(self, recognizer: Recognizer, utterance: Utterance, transcript: Transcript) -> str:
        """The transcript, or a reading of it with a phrase in, when the audio supports that reading.

        The transcript comes from a decode without the phrases as prompt: a prompt makes Whisper write
        the names, but it also rewrites ordinary sentences. So the prompt is used only where the
        transcript holds no phrase yet and has a span that sounds like one (or the decoder was unsure):
        the utterance is decoded again with it, on the transcript's encoder output. Sound-alike spans of either
        transcript propose readings; the recognizer weighs each against the transcript on the audio, the
        phrases given as context, and the best replaces the transcript if it is within `margin` of it.
        """
        text = transcript.text
        readings = self._readings(transcript)
        prompt = self.graph.prompt
        context = replace(utterance, prompt=prompt) if prompt else utterance
        called_for = transcript.avg_logprob < self.unsure_logprob or any(r != text for r in readings)
        if prompt and called_for and not self.corrector.spelled(text):
            again = recognizer.redecode(replace(context, bias=self.graph.start()), transcript.encoding).text
            if again and again != text:
                readings += [again, self.correct(again), *self.corrector.alternatives(again, limit=4)]
        return self._gate(recognizer, context, transcript, self._best(recognizer, context, transcript, readings))

    def weigh(self, recognizer: Recognizer, utterance: Utterance, transcript: Transcript) -> str:
        """`refine` for a transcript already decoded with the phrases as prompt (a call's turn): its
        sound-alike readings are weighed on the audio, with no second decode to wait for; with
        `gate_calls`, a turn that names a phrase is decoded again, unbiased, to check the name (`_gate`)."""
        best = self._best(recognizer, utterance, transcript, self._readings(transcript))
        return self._gate(recognizer, utterance, transcript, best) if self.gate_calls else best

    def _readings(self, transcript: Transcript) -> list[str]:
        """The strict correction, and loose sound-alike readings where the decoder was not sure."""
        readings = [self.correct(transcript.text)]
        if transcript.avg_logprob < self.sure_logprob:
            readings += self.corrector.alternatives(transcript.text, limit=4)
        return readings

    def _best(self, recognizer: Recognizer, context: Utterance, transcript: Transcript, readings: list[str]) -> str:
        text = transcript.text
        readings = [r for r in dict.fromkeys(readings) if r != text and self.corrector.spelled(r)]
        if not readings:
            return text
        gains = recognizer.compare(context, text, readings, transcript.encoding)
        best = max(range(len(readings)), key=gains.__getitem__)
        return readings[best] if gains[best] >= -self.margin else text

    def _gate(self, recognizer: Recognizer, context: Utterance, transcript: Transcript, text: str) -> str:
        """`text`, keeping each phrase it names only if the audio supports it over what an unbiased
        decode hears there.

        The readings and a call's decode are judged with the phrases in front of the decoder, where a
        listed name is likely whatever was said: a caller naming an unlisted product ("my Skyrune
        router") came out as a listed one. So the encoder output is decoded once more with neither
        prompt nor graph, and each phrase that reading does not name is put into it on its own
        (`PhraseCorrector.transplant`: the name's span alone, not the other words two decodes differ
        on) and weighed on the audio: against the unbiased reading with the phrases as context, so that
        an invented name does not lose for being unknown to the language model (`plain_margin`), and,
        with no context, against the same reading with made-up names of the phrase's shape in its place
        (`decoys`), which the audio must like less. Each phrase stands or falls alone: a biased decode
        that wrote a second, unsaid name beside the caller's ("Venquor Max, Sabrelo music") loses only
        that one. Phrases that fail give way: to the transcript, or to the unbiased reading where the
        biased decode wrote them itself, with the phrases that passed put into it.
        """
        named = self.corrector.named(text)
        if not named:
            return text
        bare = replace(context, bias=None, prompt="")
        plain = recognizer.redecode(bare, transcript.encoding).text
        heard = self.corrector.named(plain)
        new = sorted(named - heard)
        if not new:
            return text
        fallback = plain if self.corrector.spelled(transcript.text) else transcript.text
        if not plain:
            return fallback
        spliced = [self.corrector.transplant(text, plain, {p}) for p in new]
        gains = recognizer.compare(replace(context, bias=None), plain, spliced, transcript.encoding)
        near = [(p, s) for p, s, gain in zip(new, spliced, gains, strict=True) if gain >= -self.plain_margin]
        if not near:
            return fallback
        readings = [[s, *(self.corrector.swap(s, p, d) for d in decoys(p, self.decoys))] for p, s in near]
        scores = iter(recognizer.compare(bare, plain, [r for rs in readings for r in rs], transcript.encoding))
        kept = set()
        for (p, _), rs in zip(near, readings, strict=True):
            name, *made_up = (next(scores) for _ in rs)
            if all(name > g for g in made_up):
                kept.add(p)
        if kept == set(new):
            return text
        return self.corrector.transplant(text, fallback, (named & heard) | kept) if kept else fallback


def grammar_vocabulary(tokenizer: WhisperTokenizer, grammar: str, boost: float) -> Vocabulary | None:
    """The decoder's steer toward a listening node's closed grammar (digits, yes/no), the commands that
    work everywhere included: None for free speech or a zero boost."""
    words = vocabulary(grammar)
    if not words or boost <= 0:
        return None
    return Vocabulary.build(tokenizer, (*words, *command_words()), boost, numerals=grammar == "digits")
