"""The prompts a flow plays, kept in memory: text rendered once by the TTS, recorded WAVs loaded once.

A turn's answer must start playing within milliseconds of the dialog's decision, so every prompt the
flow can say without filling in a slot is prepared at startup (`warm`); prompts with slot values
(`"I have {account_number}"`) are rendered on first use and kept too, up to `max_entries`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

from pydantic import BaseModel

from dialog import actions as act
from dialog.flow import Flow
from dialog.flow import Prompt as FlowPrompt
from ivr.calls.prompts import Prompt, PromptError, PromptRenderer, load_prompt

log = logging.getLogger(__name__)


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
        key = ("wav", wav) if (wav := play.wav) else ("text", play.text or "")
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if key[0] == "wav":
            prompt = await load_prompt(self._wav_path(key[1]))
        else:
            prompt = await self._renderer.render(key[1])
        self._cache[key] = prompt
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return prompt

    async def text(self, text: str) -> Prompt:
        return await self.get(act.Play(text=text))

    async def warm(self, flow: Flow, extra_texts: tuple[str, ...] = ()) -> int:
        """Prepare every fixed prompt of `flow` (and `extra_texts`); returns how many are ready."""
        plays = [act.Play(text=p.text, wav=p.wav) for p in _flow_prompts(flow) if p.wav or "{" not in (p.text or "")]
        plays += [act.Play(text=t) for t in extra_texts]
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
