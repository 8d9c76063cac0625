"""Whisper's byte-level BPE tokenizer (tokenizer.json) and its special tokens."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tokenizers import Tokenizer

# Punctuation and symbols Whisper's reference decoder never lets it emit on their own, in the
# words of openai/whisper's tokenizer.non_speech_tokens: used when a checkpoint carries no list.
_NON_SPEECH = [*'"#()*+/:;<=>@[\\]^_`{|}~「」『』',
    "<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("', "((", "))", "(((", ")))", "[[", "]]",
    "{{", "}}", "♪♪", "♪♪♪", "♩", "♪", "♫", "♬", "♭", "♮", "♯",
]  # fmt: skip


@dataclass(frozen=True)
class SpecialTokens:
    eot: int
    sot: int
    transcribe: int
    translate: int
    sot_prev: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int
    lang: dict[str, int]


class WhisperTokenizer:
    def __init__(self, path: Path, n_vocab: int) -> None:
        self._tok = Tokenizer.from_file(str(path))
        self.n_vocab = n_vocab
        self.multilingual = n_vocab >= 51865

    def _id(self, *names: str) -> int:
        for name in names:
            i = self._tok.token_to_id(name)
            if i is not None:
                return i
        raise ValueError(f"tokenizer has none of {names}")

    @cached_property
    def special(self) -> SpecialTokens:
        eot = self._id("<|endoftext|>")
        sot = self._id("<|startoftranscript|>")
        langs = {}
        for i in range(sot + 1, sot + 101):
            tok = self._tok.id_to_token(i)
            if tok is None or not (tok.startswith("<|") and tok.endswith("|>")) or len(tok) > 9:
                break
            langs[tok[2:-2]] = i
        no_ts = self._id("<|notimestamps|>")
        return SpecialTokens(
            eot=eot,
            sot=sot,
            transcribe=self._id("<|transcribe|>"),
            translate=self._id("<|translate|>"),
            sot_prev=self._id("<|startofprev|>"),
            no_speech=self._id("<|nospeech|>", "<|nocaptions|>"),
            no_timestamps=no_ts,
            timestamp_begin=no_ts + 1,
            lang=langs,
        )

    def sot_sequence(self, language: str = "en") -> list[int]:
        s = self.special
        if not self.multilingual:
            return [s.sot, s.no_timestamps]
        if language not in s.lang:
            raise ValueError(f"language {language!r} is not known to this model")
        return [s.sot, s.lang[language], s.transcribe, s.no_timestamps]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        eot = self.special.eot
        return self._tok.decode([i for i in ids if i < eot], skip_special_tokens=True)

    def non_speech_tokens(self) -> list[int]:
        """openai/whisper's default suppress set, for checkpoints that don't carry one."""
        ids = {self.encode(" -")[0], self.encode(" '")[0]}
        for sym in _NON_SPEECH:
            for text in (sym, " " + sym):
                pieces = self.encode(text)
                if len(pieces) == 1:
                    ids.add(pieces[0])
        return sorted(ids)
