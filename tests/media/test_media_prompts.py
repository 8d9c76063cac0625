import asyncio
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from ivr.calls import prompts
from ivr.calls.prompts import PromptConfig, PromptError, PromptRenderer, load_prompt, read_wav, write_wav


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every TTS subprocess the renderer starts."""
    calls: list[tuple[str, ...]] = []
    real = asyncio.create_subprocess_exec

    async def counting(*argv: str, **kw: object) -> asyncio.subprocess.Process:
        calls.append(argv)
        return await real(*argv, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(prompts.asyncio, "create_subprocess_exec", counting)
    return calls


@pytest.mark.parametrize("engine", ["espeak-ng", "flite"])
async def test_text_prompt_renders_once_then_hits_the_cache(tmp_path: Path, spawned: list, engine: str) -> None:
    if shutil.which(engine) is None:
        pytest.skip(f"{engine} not installed")
    r = PromptRenderer(PromptConfig(cache_dir=tmp_path, engine=engine))  # type: ignore[arg-type]
    first = await r.render("Welcome. Please say what you are calling about.")
    assert first.sample_rate == 8000 and first.pcm.dtype == np.int16
    assert 1.0 < first.duration < 8.0
    assert np.abs(first.pcm.astype(np.int32)).max() > 1000
    with wave.open(str(r.cache_path("Welcome. Please say what you are calling about."))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    assert len(spawned) == 2  # the voice check, then the render
    second = await r.render("Welcome. Please say what you are calling about.")
    assert len(spawned) == 2  # cache hit: no subprocess
    assert np.array_equal(first.pcm, second.pcm)
    # a fresh renderer on the same cache directory hits too (the cache is on disk)
    await PromptRenderer(PromptConfig(cache_dir=tmp_path, engine=engine)).render(  # type: ignore[arg-type]
        "Welcome. Please say what you are calling about."
    )
    assert len(spawned) == 2
    assert _listing(tmp_path) == [r.cache_path("Welcome. Please say what you are calling about.").name]


async def test_concurrent_requests_share_one_render(tmp_path: Path, spawned: list) -> None:
    r = PromptRenderer(PromptConfig(cache_dir=tmp_path, engine="espeak-ng"))
    results = await asyncio.gather(*(r.render("For billing, press one.") for _ in range(5)))
    assert [argv[-1] for argv in spawned] == ["--voices", "--stdin"]  # one voice check, one render
    assert all(np.array_equal(results[0].pcm, x.pcm) for x in results)


async def test_cache_key_covers_voice_and_speed(tmp_path: Path) -> None:
    a = PromptRenderer(PromptConfig(cache_dir=tmp_path, engine="espeak-ng"))
    b = PromptRenderer(PromptConfig(cache_dir=tmp_path, engine="espeak-ng", speed_wpm=200))
    c = PromptRenderer(PromptConfig(cache_dir=tmp_path, engine="espeak-ng", voice="en-gb"))
    assert len({a.cache_path("hi"), b.cache_path("hi"), c.cache_path("hi"), a.cache_path("hi!")}) == 4
    slow, fast = await a.render("one two three four five"), await b.render("one two three four five")
    assert fast.duration < slow.duration


async def test_tts_failure_is_a_clear_error(tmp_path: Path) -> None:
    r = PromptRenderer(PromptConfig(cache_dir=tmp_path, engine="espeak-ng", voice="no-such-voice-xx"))
    with pytest.raises(PromptError, match="no voice 'no-such-voice-xx'"):
        await r.render("hello")
    with pytest.raises(PromptError, match="empty"):
        await r.render("   ")
    assert _listing(tmp_path) == []  # no half-written cache entry left
    assert (await PromptRenderer(PromptConfig(cache_dir=tmp_path, voice="en-us+f3")).render("hi")).duration > 0.1


async def test_recorded_prompts_are_validated_and_resampled(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    write_wav(tmp_path / "16k.wav", tone, 16000)
    p = await load_prompt(tmp_path / "16k.wav")
    assert p.sample_rate == 8000 and len(p.pcm) == 8000
    spectrum = np.abs(np.fft.rfft(p.pcm.astype(np.float64)))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over 1 s

    write_wav(tmp_path / "8k.wav", tone[:8000], 8000)
    assert np.array_equal(read_wav(tmp_path / "8k.wav").pcm, tone[:8000])

    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (tmp_path / "empty.wav").write_bytes(b"")
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00" * 400)
    with wave.open(str(tmp_path / "8bit.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 400)
    good = (tmp_path / "8k.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(good[: len(good) // 2])
    for name, why in [
        ("garbage.wav", "not a readable"),
        ("empty.wav", "not a readable"),
        ("stereo.wav", "mono"),
        ("8bit.wav", "16-bit"),
        ("truncated.wav", "truncated"),
        ("missing.wav", "No such file"),
    ]:
        with pytest.raises(PromptError, match=why):
            await load_prompt(tmp_path / name)
