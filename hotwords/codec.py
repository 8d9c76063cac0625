"""The tokenizer as the hot-word package sees it: text to Whisper token ids and back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer


@dataclass(frozen=True)
class TokenCodec:
    tokenizer: Tokenizer

    @classmethod
    def from_file(cls, path: str | Path) -> TokenCodec:
        """`path`: a Hugging Face `tokenizer.json` (e.g. the one shipped next to the Whisper weights)."""
        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
