"""A cached prompt starts with its sound: the silence a recording or the TTS puts before it would be
waited out by the caller on every answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dialog import actions as act
from ivr.calls.prompt_cache import PromptCache
from ivr.calls.prompts import PromptConfig, PromptRenderer, read_wav

ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


async def test_a_recorded_prompt_loses_its_lead_in_and_nothing_else(tmp_path: Path) -> None:
    cache = PromptCache(PromptRenderer(PromptConfig(cache_dir=tmp_path)), wav_dir=ALLISON)
    prompt = await cache.get(act.Play(text=None, wav="all-circuits-busy-now.wav"))
    original = read_wav(ALLISON / "all-circuits-busy-now.wav")
    assert len(original.pcm) - len(prompt.pcm) > 0.02 * prompt.sample_rate  # it started with silence
    assert np.array_equal(prompt.pcm, original.pcm[-len(prompt.pcm) :])  # the rest, tail included
    loud = np.flatnonzero(np.abs(prompt.pcm.astype(np.int32)) > 200)
    assert loud[0] <= 0.01 * prompt.sample_rate + 1  # the sound begins within the 10 ms margin
