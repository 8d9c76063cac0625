"""Confirmation prompts that read the caller's number back never write it to disk: they are put
together in memory from per-digit audio and the prompt's fixed words, which the cache holds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from dialog import actions as act
from dialog import events as ev
from dialog.flow import load_demo_flow
from dialog.policy import DialogPolicy
from ivr.calls.prompt_cache import PromptCache, _trimmed
from ivr.calls.prompts import PromptConfig, PromptRenderer


def _files(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def _confirmation(number: str) -> act.Play:
    policy = DialogPolicy(load_demo_flow())
    ctx = policy.decide(policy.new_context("c1"), ev.CallStarted()).context
    ctx = policy.decide(ctx, ev.Dtmf("4")).context
    decision = policy.decide(ctx, ev.Dtmf(number + "#"))
    plays = [a for a in decision.actions if isinstance(a, act.Play)]
    assert len(plays) == 1 and plays[0].private
    return plays[0]


async def test_confirmation_is_assembled_in_memory_and_leaves_no_file(tmp_path: Path) -> None:
    renderer = PromptRenderer(PromptConfig(cache_dir=tmp_path))
    cache = PromptCache(renderer)
    await cache.warm(load_demo_flow())
    before = _files(tmp_path)
    play = _confirmation("47192233")
    assert play.text is not None and play.text.startswith("I have 4 7 1 9 2 2 3 3.")
    prompt = await cache.get(play)
    assert _files(tmp_path) == before  # nothing rendered: every piece was prepared at startup
    assert not renderer.cache_path(play.text).exists()
    assert not any("4 7 1 9" in (key[1] or "") for key in cache._cache)  # nor kept in memory
    # The audio is the fixed words and each digit, in order, without the TTS's silence around each.
    head, four = _trimmed(await cache.text("I have")), _trimmed(await cache.text("4"))
    assert prompt.sample_rate == 8000
    assert 0 < len(head) < len((await cache.text("I have")).pcm)
    assert np.array_equal(prompt.pcm[: len(head)], head)
    offset = len(head) + int(0.08 * 8000)
    assert np.array_equal(prompt.pcm[offset : offset + len(four)], four)
    whole = await renderer.render(play.text)  # what the TTS would say in one piece (rendered to a file)
    assert prompt.duration < 1.25 * whole.duration
    assert renderer.cache_path(play.text).exists()  # as an ordinary prompt would have been


def test_prompts_without_secret_slots_are_not_private() -> None:
    policy = DialogPolicy(load_demo_flow())
    decision = policy.decide(policy.new_context("c1"), ev.CallStarted())
    assert not any(a.private for a in decision.actions if isinstance(a, act.Play))
