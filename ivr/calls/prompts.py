"""Prompts: text rendered once by a local TTS (espeak-ng, else flite) into an on-disk cache of 8 kHz
mono 16-bit WAVs, and recorded WAV prompts, validated and brought to 8 kHz."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from asr_engine.audio.resample import resample_int16
from asr_engine.config import default_cache_dir

PROMPT_CACHE = Counter("voicenav_prompt_cache_total", "Text prompt lookups, by result", ["result"])  # hit, render
PROMPT_ERRORS = Counter("voicenav_prompt_errors_total", "Prompts that failed to render or load", ["kind"])

SAMPLE_RATE = 8000
Engine = Literal["espeak-ng", "flite"]
_DEFAULT_VOICE: dict[str, str] = {"espeak-ng": "en-us", "flite": "slt"}


class PromptError(RuntimeError):
    """A prompt that cannot be rendered or loaded (broken WAV, TTS failure)."""


class PromptConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    cache_dir: Path = Field(
        default_factory=lambda: default_cache_dir() / "prompts", description="where rendered prompts are kept"
    )
    engine: Engine | None = Field(default=None, description="TTS program; none: espeak-ng if installed, else flite")
    voice: str | None = Field(
        default=None, description='espeak-ng voice ("en-us") or flite -voice name ("slt"); none: that default'
    )
    speed_wpm: int = Field(default=160, ge=80, le=400, description="speaking rate, words per minute")
    render_timeout: float = Field(default=30.0, gt=0, description="seconds one prompt may take to render")
    max_text_chars: int = Field(default=2000, ge=1, description="longest prompt text")


@dataclass(frozen=True, slots=True)
class Prompt:
    pcm: np.ndarray  # int16, mono
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.sample_rate


def read_wav(path: Path, sample_rate: int = SAMPLE_RATE) -> Prompt:
    """Load a PCM16 mono WAV, resampled to `sample_rate`; `PromptError` says what is wrong otherwise."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = (
                w.getnchannels(),
                w.getsampwidth(),
                w.getframerate(),
                w.getnframes(),
            )
            data = w.readframes(frames)
    except (wave.Error, EOFError) as e:
        raise PromptError(f"{path}: not a readable PCM WAV ({e})") from e
    except OSError as e:
        raise PromptError(f"{path}: {e}") from e
    if width != 2:
        raise PromptError(f"{path}: {8 * width}-bit samples, need 16-bit PCM")
    if channels != 1:
        raise PromptError(f"{path}: {channels} channels, need mono")
    if len(data) < 2 * frames:
        raise PromptError(f"{path}: truncated, {len(data) // 2} of {frames} samples")
    pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
    return Prompt(resample_int16(pcm, rate, sample_rate), sample_rate)


def write_wav(path: Path, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


async def load_prompt(path: Path) -> Prompt:
    """A recorded prompt, read off the event loop."""
    try:
        return await asyncio.to_thread(read_wav, path)
    except PromptError:
        PROMPT_ERRORS.labels("wav").inc()
        raise


class PromptRenderer:
    """Text -> cached 8 kHz WAV. Concurrent requests for one prompt share a single TTS run."""

    def __init__(self, config: PromptConfig) -> None:
        self.config = config
        self.engine: Engine = config.engine or ("espeak-ng" if shutil.which("espeak-ng") else "flite")
        if shutil.which(self.engine) is None:
            raise PromptError(f"TTS engine {self.engine} is not installed")
        self.voice = config.voice or _DEFAULT_VOICE[self.engine]
        self._inflight: dict[str, asyncio.Task[Path]] = {}
        self._voice_ok = False

    def cache_path(self, text: str) -> Path:
        c = self.config
        key = "\0".join([self.engine, self.voice, str(c.speed_wpm), text])
        return c.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.wav"

    async def render(self, text: str) -> Prompt:
        if not text.strip():
            raise PromptError("empty prompt text")
        if len(text) > self.config.max_text_chars:
            raise PromptError(f"prompt text of {len(text)} characters, limit {self.config.max_text_chars}")
        path = self.cache_path(text)
        if path.exists():
            PROMPT_CACHE.labels("hit").inc()
            return await load_prompt(path)
        task = self._inflight.get(path.name)
        if task is None:
            task = asyncio.create_task(self._render(text, path))
            self._inflight[path.name] = task
            task.add_done_callback(lambda _t: self._inflight.pop(path.name, None))
        # shield: one caller giving up (a hung-up call) must not cancel the render the others await.
        await asyncio.shield(task)
        return await load_prompt(path)

    async def _render(self, text: str, path: Path) -> Path:
        PROMPT_CACHE.labels("render").inc()
        raw = await asyncio.to_thread(_scratch_file, self.config.cache_dir, ".raw.wav")
        try:
            await self._check_voice()
            await self._run_tts(text, raw)
            await asyncio.to_thread(_store, raw, path)
            return path
        except PromptError:
            PROMPT_ERRORS.labels("tts").inc()
            raise
        finally:
            await asyncio.to_thread(raw.unlink, missing_ok=True)

    async def _check_voice(self) -> None:
        """Both engines silently fall back to a default voice for an unknown name: refuse instead, so
        a misconfigured voice is an error rather than prompts in the wrong voice."""
        if self._voice_ok:
            return
        if "/" in self.voice and self.engine == "flite":
            known = {self.voice} if await asyncio.to_thread(Path(self.voice).is_file) else set()
        else:
            argv = ["espeak-ng", "--voices"] if self.engine == "espeak-ng" else ["flite", "-lv"]
            listing = (await self._exec(argv, b"")).decode(errors="replace")
            known = {tok.strip("()").lower() for tok in listing.split()}
        if self.voice.split("+")[0].lower() not in known:
            raise PromptError(f"{self.engine} has no voice {self.voice!r}")
        self._voice_ok = True

    async def _run_tts(self, text: str, out: Path) -> None:
        c = self.config
        text_file: Path | None = None
        if self.engine == "espeak-ng":
            argv = ["espeak-ng", "-v", self.voice, "-s", str(c.speed_wpm), "-w", str(out), "--stdin"]
            stdin = text.encode()
        else:
            # flite has no words-per-minute knob; its duration stretch is relative to ~170 wpm.
            text_file = await asyncio.to_thread(_scratch_file, c.cache_dir, ".txt")
            await asyncio.to_thread(text_file.write_text, text)
            name = str(text_file)
            stretch = f"{170 / c.speed_wpm:.3f}"
            argv = [
                "flite",
                "-voice",
                self.voice,
                "--setf",
                f"duration_stretch={stretch}",
                "-f",
                name,
                "-o",
                str(out),
            ]
            stdin = b""
        try:
            await self._exec(argv, stdin)
        finally:
            if text_file is not None:
                await asyncio.to_thread(text_file.unlink, missing_ok=True)

    async def _exec(self, argv: list[str], stdin: bytes) -> bytes:
        """Run the TTS tool with a time limit; its stdout, or `PromptError`."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.config.render_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise PromptError(f"{self.engine} took more than {self.config.render_timeout} s") from None
        if proc.returncode != 0:
            msg = err.decode(errors="replace").strip()
            raise PromptError(f"{self.engine} exited with {proc.returncode}: {msg}")
        return out


def _scratch_file(directory: Path, suffix: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=suffix, dir=directory)
    os.close(fd)
    return Path(name)


def _store(raw: Path, path: Path) -> None:
    """Convert the TTS output to the cached 8 kHz file, written beside it and renamed into place so
    that a reader never sees a half-written cache file."""
    prompt = read_wav(raw)
    if len(prompt.pcm) == 0:
        raise PromptError(f"the TTS produced no audio for {path.name}")
    tmp = raw.with_suffix(".8k.wav")
    try:
        write_wav(tmp, prompt.pcm)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
