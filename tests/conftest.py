"""Fixtures shared by every test package: the speech data beside the checkout and one recognizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# `scripts/setup.sh` installs every tool, model and service the tests use, so a skip means a broken
# set-up and fails the run. On a partial machine, VOICENAV_ALLOW_SKIPS=1 lets tests skip instead.
ALLOW_SKIPS = os.environ.get("VOICENAV_ALLOW_SKIPS") == "1"
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


def shared_dir() -> Path | None:
    for cand in (os.environ.get("VOICENAV_SHARED"), ROOT.parent / "shared", ROOT / "shared"):
        if cand and (Path(cand) / "data").is_dir():
            return Path(cand)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = (yield).get_result()
    if report.skipped and not ALLOW_SKIPS:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but the set-up should provide this: {reason} (VOICENAV_ALLOW_SKIPS=1 allows it)"


@pytest.fixture(scope="session")
def shared() -> Path:
    d = shared_dir()
    if d is None:
        pytest.skip("speech data (../shared) is not beside this checkout")
    return d


@pytest.fixture(scope="session")
def asterisk_dev(shared: Path) -> list[tuple[Path, str]]:
    """(wav, reference) pairs of the real Asterisk recordings listed for development."""
    if not ASTERISK_SOUNDS.is_dir():
        pytest.skip("asterisk-core-sounds-en-wav is not installed")
    rows = [line.rstrip("\n").split("\t") for line in (shared / "data" / "asterisk_dev.tsv").read_text().splitlines()]
    return [(ASTERISK_SOUNDS / f"{k}.wav", ref) for k, ref in rows if (ASTERISK_SOUNDS / f"{k}.wav").exists()]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted models are reused across runs: conversion itself is covered by its own test."""
    d = Path(os.environ.get("VOICENAV_TEST_CACHE", ROOT / ".cache" / "test-models"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def recognizer(model_cache: Path):
    from asr_engine.config import EngineConfig, RecognizerConfig
    from asr_engine.recognizer import Recognizer

    rec = Recognizer(RecognizerConfig(engine=EngineConfig(cache_dir=model_cache)))
    rec.warmup()
    return rec


@pytest.fixture(scope="session")
def vad():
    from asr_engine.vad import SileroVad

    return SileroVad()
