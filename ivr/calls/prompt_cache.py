"""The prompts a flow plays, kept in memory: text rendered once by the TTS, recorded WAVs loaded once.

A turn's answer must start playing within milliseconds of the dialog's decision, so every prompt the
flow can say without filling in a slot is prepared at startup (`warm`); prompts with slot values
(`"I have {product}"`) are rendered on first use and kept too, up to `max_entries`. A private prompt
(one that reads caller data back, `"I have {account_number}"`) is never rendered whole: it is put
together in memory from the cached audio of its fixed words and of each digit, and not kept.
"""

from __future__ import annotations

import logging
import re
import string
from collections import OrderedDict
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from dialog import actions as act
from dialog.flow import Flow
from dialog.flow import Prompt as FlowPrompt
from dialog.redact import secret_slots
from ivr.calls.prompts import Prompt, PromptError, PromptRenderer, load_prompt

log = logging.getLogger(__name__)

_DIGIT = re.compile(r"(\d)")
_GAP_S = 0.08  # between the pieces of a private prompt: digits read one by one, not run together
_SILENCE = 200  # |sample| below this at a piece's ends is the TTS's own lead-in and tail
_MARGIN_S = 0.01  # kept around the sound so word onsets and endings are not clipped


def _pieces(text: str) -> list[str]:
    """A private prompt's text as the units it is spoken from: single digits and the words between."""
    return [p.strip() for p in _DIGIT.split(text) if any(c.isalnum() for c in p)]


def _trimmed(prompt: Prompt, tail: bool = True) -> np.ndarray:
    """The piece without the silence the TTS puts before and after every utterance (a digit rendered
    alone is mostly silence: joined as is, an eight-digit number would take seconds longer); with
    `tail` False, without the lead-in only."""
    loud = np.flatnonzero(np.abs(prompt.pcm.astype(np.int32)) > _SILENCE)
    if len(loud) == 0:
        return prompt.pcm
    margin = int(_MARGIN_S * prompt.sample_rate)
    end = loud[-1] + 1 + margin if tail else len(prompt.pcm)
    return prompt.pcm[max(0, loud[0] - margin) : end]


class PromptCache:
    def __init__(self, renderer: PromptRenderer, wav_dir: Path | None = None, max_entries: int = 512) -> None:
        self._renderer = renderer
        self._wav_dir = wav_dir  # recorded prompts named relatively in the flow live here
        self._max = max_entries
        self._cache: OrderedDict[tuple[str, str], Prompt] = OrderedDict()

    def _wav_path(self, wav: str) -> Path:
        p = Path(wav)
        return p if p.is_absolute() or self._wav_dir is None else self._wav_dir / p

    async def get(self, play: act.Play) -> Prompt:
        """The audio for a Play action: its WAV when it has one, else its text synthesized."""
        if play.private and not play.wav:
            return await self._assemble(play.text or "")
        key = ("wav", wav) if (wav := play.wav) else ("text", play.text or "")
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if key[0] == "wav":
            prompt = await load_prompt(self._wav_path(key[1]))
        else:
            prompt = await self._renderer.render(key[1])
        # A lead-in of silence (up to ~100 ms from the TTS, more in some recordings) is time the
        # caller waits for the answer; the tail is harmless.
        prompt = Prompt(_trimmed(prompt, tail=False), prompt.sample_rate)
        self._cache[key] = prompt
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return prompt

    async def text(self, text: str) -> Prompt:
        return await self.get(act.Play(text=text))

    async def _assemble(self, text: str) -> Prompt:
        """A private prompt from cached pieces, in memory only: no file or cache entry holds its digits."""
        pieces = _pieces(text)
        if not pieces:
            raise PromptError("empty prompt text")
        parts = [await self.text(piece) for piece in pieces]
        rate = parts[0].sample_rate
        gap = np.zeros(int(_GAP_S * rate), np.int16)
        pcm = np.concatenate([x for part in parts for x in (_trimmed(part), gap)][:-1])
        return Prompt(pcm, rate)

    async def warm(self, flow: Flow, extra_texts: tuple[str, ...] = ()) -> int:
        """Prepare every fixed prompt of `flow` (and `extra_texts`); returns how many are ready."""
        prompts = _flow_prompts(flow)
        plays = [act.Play(text=p.text, wav=p.wav) for p in prompts if p.wav or "{" not in (p.text or "")]
        plays += [act.Play(text=t) for t in extra_texts]
        secret = secret_slots(flow)
        private = [list(string.Formatter().parse(p.text)) for p in prompts if p.text and "{" in p.text]
        private = [parsed for parsed in private if any(name in secret for _, name, _, _ in parsed)]
        if private:
            # What private prompts (numbers read back) are put together from: digits and fixed words.
            fixed = [piece for parsed in private for literal, _, _, _ in parsed for piece in _pieces(literal)]
            plays += [act.Play(text=piece) for piece in dict.fromkeys([*"0123456789", *fixed])]
        ready = 0
        for play in plays:
            try:
                await self.get(play)
                ready += 1
            except PromptError as exc:
                # A broken prompt fails the turns that use it, not the service.
                log.error("prompt %r not prepared: %s", play.wav or play.text, exc)
        return ready


def _flow_prompts(node: object) -> list[FlowPrompt]:
    """Every prompt anywhere in the flow model, in document order, without repeats."""
    found: dict[FlowPrompt, None] = {}

    def walk(value: object) -> None:
        if isinstance(value, FlowPrompt):
            found.setdefault(value, None)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(node)
    return list(found)
