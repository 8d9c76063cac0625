"""A validation caller set that no setting is ever tuned on: product names, phrasings and voices that
callers_dev does not have, through the same kind of telephone channel.

    .venv/bin/python -m bench.make_callers [OUTDIR]

Three kinds of utterance: ones naming a product on the set's list (recall), ones naming a product
that is *not* on it but sounds just as made-up (a biased decode must not write a listed name there),
and ordinary requests without a product name. Each clip is rendered by flite or espeak-ng (voices and
variants callers_dev does not use, or its flite voices at another rate and pitch), band-limited to
300-3400 Hz, mixed with line noise at 18-30 dB SNR and passed through G.711 μ-law at 8 kHz.

Deterministic: the texts and voices are fixed here and each clip's noise comes from a generator seeded
with the clip's index, so any subset renders the same audio as the whole set. The audio is written
to a cache directory (`.cache/bench/callers_val` by default), never committed; `manifest.jsonl` holds
one line per clip (id, text, intent, kind, named product, listed hot words in it, voice, seconds) and
`list.txt` the set's hot-word list.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.signal as signal

from asr_engine.audio.g711 import ulaw_decode, ulaw_encode
from asr_engine.audio.wav import read_wav, wav_bytes

from .common import ROOT, Clip

RATE = 8000
SEED = 20261202
DEFAULT_DIR = ROOT / ".cache" / "bench" / "callers_val"
SET_NAME = "callers-val"
Kind = Literal["listed", "unlisted", "ordinary"]

# The list loaded for this set: invented names, none of them callers_dev's.
LISTED = ["Myxora hotspot", "Drovantis Plus", "Lumeria broadband", "Quenzo TV", "Halvecta cloud", "Sorintel data"]
# Products a caller may name that are not on the list. Several share a word with a listed name
# ("hotspot", "Plus", "cloud", "broadband"): the generic word must not pull the listed name in.
UNLISTED = [
    "Skyrune router",
    "Tavora modem",
    "Nimbrel SIM",
    "Kordana prepaid",
    "Zephiro streaming",
    "Bexwell mesh",
    "Skyrune hotspot",
    "Ostrava Plus",
    "Pellacor cloud",
    "Grendal broadband",
]
# Phrasings callers_dev does not use, with the intent each carries.
TEMPLATES = [
    ("how much does {} cost each month", "sales"),
    ("{} stopped working after the update", "tech_support"),
    ("there is a strange charge for {} on my bill", "billing"),
    ("I need to move {} to my new address", "account"),
    ("please stop renewing {} for me", "cancel"),
    ("hi I'm calling because {} won't connect", "tech_support"),
    ("can I get {} for my daughter too", "sales"),
    ("my {} is a lot slower than it used to be", "tech_support"),
]
# The failure reported from held-out callers, word for word (a callers_dev phrasing, another name).
REPORTED = ("my {} keeps dropping the connection", "tech_support")
ORDINARY = [
    ("I'd like to check my last payment", "billing"),
    ("my phone shows no signal since this morning", "tech_support"),
    ("how do I set up my voicemail", "tech_support"),
    ("can I speak with somebody in billing", "billing"),
    ("I moved and need to update my details", "account"),
    ("what are your opening hours", "agent"),
    ("the internet is very slow tonight", "tech_support"),
    ("I was charged a late fee by mistake", "billing"),
    ("I want to end my contract", "cancel"),
    ("please transfer me to an operator", "agent"),
    ("yes please", "yes"),
    ("no thank you", "no"),
    ("one two three four five six", "digits"),
    ("could you repeat the options", "repeat"),
    ("take me back to the start", "back"),
    ("the lights on my router are blinking red", "tech_support"),
    ("I need a copy of my invoice", "billing"),
    ("is there a cheaper plan for students", "sales"),
    ("I lost my phone and need a new card", "account"),
    ("I'd like to add another line to my account", "sales"),
]


@dataclass(frozen=True)
class Voice:
    engine: Literal["flite", "espeak"]
    name: str
    rate: float  # flite: duration stretch; espeak: words per minute
    pitch: float  # flite: mean F0 in Hz (0: the voice's own); espeak: 0-99

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.name}@{self.rate:g}/{self.pitch:g}"


VOICES = [
    Voice("flite", "kal", 1.0, 0),
    Voice("espeak", "en-us+f4", 165, 55),
    Voice("espeak", "en-gb+m4", 150, 40),
    Voice("flite", "rms", 1.2, 90),
    Voice("espeak", "en-gb-scotland+m2", 160, 50),
    Voice("espeak", "en-gb-x-rp+f1", 145, 65),
    Voice("flite", "slt", 0.9, 200),
    Voice("espeak", "en-us+m7", 170, 35),
    Voice("espeak", "en-gb-x-gbcwmd+f5", 155, 60),
    Voice("espeak", "en-029+m1", 150, 45),
]


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str
    intent: str
    kind: Kind
    named: str  # the product the caller names ("" for ordinary requests)
    hotwords: list[str]  # listed names the caller says
    voice: Voice


def utterances() -> list[Utterance]:
    """The whole set, in a fixed order: listed names, unlisted names, ordinary requests."""
    rows: list[tuple[str, str, Kind, str]] = []
    for i, name in enumerate(LISTED):
        for j in range(4):
            template, intent = TEMPLATES[(i + j) % len(TEMPLATES)]
            rows.append((template.format(name), intent, "listed", name))
    for i, name in enumerate(UNLISTED):
        first = REPORTED if i == 0 else TEMPLATES[(2 * i) % len(TEMPLATES)]
        for template, intent in (first, TEMPLATES[(2 * i + 5) % len(TEMPLATES)]):
            rows.append((template.format(name), intent, "unlisted", name))
    rows += [(text, intent, "ordinary", "") for text, intent in ORDINARY]
    return [
        Utterance(
            f"val{n + 1:03d}", text, intent, kind, named, [named] if kind == "listed" else [], VOICES[n % len(VOICES)]
        )
        for n, (text, intent, kind, named) in enumerate(rows)
    ]


def synthesize(voice: Voice, text: str, path: Path) -> None:
    if voice.engine == "flite":
        cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={voice.rate}"]
        if voice.pitch:
            cmd += ["--setf", f"int_f0_target_mean={voice.pitch}"]
        subprocess.run([*cmd, "-t", text, "-o", str(path)], check=True, capture_output=True)
    else:
        cmd = ["espeak-ng", "-v", voice.name, "-s", f"{voice.rate:g}", "-p", f"{voice.pitch:g}", "-w", str(path), text]
        subprocess.run(cmd, check=True, capture_output=True)


def telephone(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """300-3400 Hz band at a random level, line noise at 18-30 dB SNR, G.711 μ-law round trip."""
    b, a = signal.butter(4, [300, 3400], btype="band", fs=RATE)
    y = signal.lfilter(b, a, x)
    y = y / (np.max(np.abs(y)) + 1e-9) * rng.uniform(0.3, 0.6)
    snr_db = rng.uniform(18, 30)
    y = y + rng.standard_normal(len(y)) * np.sqrt(np.mean(y**2) / 10 ** (snr_db / 10))
    pcm = np.clip(np.round(y * 32767), -32768, 32767).astype(np.int16)
    return ulaw_decode(ulaw_encode(pcm)).astype(np.float32) / 32768


def render(utt: Utterance, index: int, outdir: Path) -> float:
    """Writes `<id>.wav` (8 kHz mono 16-bit); returns its length in seconds."""
    rng = np.random.default_rng([SEED, index])
    with tempfile.TemporaryDirectory() as tmp:
        raw, pcm8 = Path(tmp) / "raw.wav", Path(tmp) / "8k.wav"
        synthesize(utt.voice, utt.text, raw)
        lead, trail = rng.uniform(0.3, 0.8), rng.uniform(0.5, 0.8)
        # -D: no dither, whose noise sox draws at random on every run.
        sox = ["sox", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(pcm8)]
        subprocess.run([*sox, "pad", f"{lead:.2f}", f"{trail:.2f}"], check=True, capture_output=True)
        x = read_wav(str(pcm8)).samples.astype(np.float64)
    y = telephone(x, rng)
    (outdir / f"{utt.id}.wav").write_bytes(wav_bytes(y, RATE))
    return round(len(y) / RATE, 2)


def fingerprint() -> str:
    """Changes whenever the texts, voices or this generator do: a stale cache is rendered again."""
    spec = json.dumps([asdict(u) for u in utterances()]) + Path(__file__).read_text()
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def generate(outdir: Path = DEFAULT_DIR, ids: set[str] | None = None) -> Path:
    """Renders the set (or the clips in `ids`) into `outdir` unless it is already there, current."""
    stamp = outdir / "fingerprint"
    if ids is None and stamp.exists() and stamp.read_text() == fingerprint():
        return outdir
    outdir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    lines = []
    for index, utt in enumerate(utterances()):
        if ids is not None and utt.id not in ids:
            continue
        seconds = render(utt, index, outdir)
        row = {**asdict(utt), "voice": utt.voice.label, "channel": "g711u-bandpass-noise", "seconds": seconds}
        lines.append(json.dumps(row))
    (outdir / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (outdir / "list.txt").write_text("\n".join(LISTED) + "\n")
    if ids is None:
        stamp.write_text(fingerprint())
    return outdir


def manifest(outdir: Path = DEFAULT_DIR, ids: set[str] | None = None) -> list[dict]:
    """The manifest's rows, once the set (or the clips in `ids`) is rendered."""
    return [json.loads(line) for line in (generate(outdir, ids) / "manifest.jsonl").read_text().splitlines()]


def validation_clips(outdir: Path = DEFAULT_DIR, limit: int | None = None) -> list[Clip]:
    rows = manifest(outdir)[:limit]
    return [Clip(SET_NAME, r["id"], read_wav(str(outdir / f"{r['id']}.wav")), r["text"], r["hotwords"]) for r in rows]


if __name__ == "__main__":
    out = generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR)
    print(f"{len(manifest(out))} clips in {out}")
