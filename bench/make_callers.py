"""Two synthetic caller sets with product names, phrasings and voices that callers_dev does not have,
through the same kind of telephone channel: a validation set that no setting is ever tuned on, and a
tuning set to choose settings by, disjoint from it (its own seed, names, phrasings and voices).

    .venv/bin/python -m bench.make_callers [--set validation|tuning] [OUTDIR]

Three kinds of utterance: ones naming a product on the set's list (recall), ones naming a product
that is *not* on it but sounds just as made-up (a biased decode must not write a listed name there),
and ordinary requests without a product name. Each clip is rendered by flite or espeak-ng (voices and
variants callers_dev does not use, or its flite voices at another rate and pitch), band-limited to
300-3400 Hz, mixed with line noise at 18-30 dB SNR and passed through G.711 μ-law at 8 kHz.

Deterministic: the texts and voices are fixed here and each clip's noise comes from a generator seeded
with the set's seed and the clip's index, so any subset renders the same audio as the whole set. The
audio is written to a cache directory (`.cache/bench/callers_val`, `.cache/bench/callers_tun` by
default), never committed; `manifest.jsonl` holds
one line per clip (id, text, intent, kind, named product, listed hot words in it, voice, seconds) and
`list.txt` the set's hot-word list.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import subprocess
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
Kind = Literal["listed", "unlisted", "ordinary"]


@dataclass(frozen=True)
class Voice:
    engine: Literal["flite", "espeak"]
    name: str
    rate: float  # flite: duration stretch; espeak: words per minute
    pitch: float  # flite: mean F0 in Hz (0: the voice's own); espeak: 0-99

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.name}@{self.rate:g}/{self.pitch:g}"


@dataclass(frozen=True)
class CallerSet:
    name: str  # the clips' `Clip.set`
    prefix: str  # of the clip ids
    seed: int
    listed: list[str]  # the list loaded for this set: invented names, none of them callers_dev's
    # Products a caller may name that are not on the list. Several share a word with a listed name:
    # the generic word must not pull the listed name in.
    unlisted: list[str]
    templates: list[tuple[str, str]]  # phrasings callers_dev does not use, with the intent each carries
    reported: tuple[str, str] | None  # the first unlisted name's first phrasing, if not a template
    ordinary: list[tuple[str, str]]
    voices: list[Voice]

    @property
    def default_dir(self) -> Path:
        return ROOT / ".cache" / "bench" / self.name.replace("-", "_")


VALIDATION = CallerSet(
    name="callers-val",
    prefix="val",
    seed=20261202,
    listed=["Myxora hotspot", "Drovantis Plus", "Lumeria broadband", "Quenzo TV", "Halvecta cloud", "Sorintel data"],
    unlisted=[
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
    ],
    templates=[
        ("how much does {} cost each month", "sales"),
        ("{} stopped working after the update", "tech_support"),
        ("there is a strange charge for {} on my bill", "billing"),
        ("I need to move {} to my new address", "account"),
        ("please stop renewing {} for me", "cancel"),
        ("hi I'm calling because {} won't connect", "tech_support"),
        ("can I get {} for my daughter too", "sales"),
        ("my {} is a lot slower than it used to be", "tech_support"),
    ],
    # The failure reported from held-out callers, word for word (a callers_dev phrasing, another name).
    reported=("my {} keeps dropping the connection", "tech_support"),
    ordinary=[
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
    ],
    voices=[
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
    ],
)

# Settings are chosen on this set (and callers_dev's tuning half), never on VALIDATION: nothing in it
# is VALIDATION's, neither names, phrasings, voices nor variants.
TUNING = CallerSet(
    name="callers-tun",
    prefix="tun",
    seed=40177,
    listed=["Venquor Max", "Talmira mobile", "Orvelle fibre", "Dexoria phone", "Kwintal Go", "Sabrelo music"],
    unlisted=[
        "Pantheo router",
        "Miravo tablet",
        "Gluvant eSIM",
        "Rostek family",
        "Yelvana games",
        "Ambrix mobile",
        "Cortino Max",
        "Hesperin fibre",
        "Lomdara phone",
        "Fennick music",
    ],
    templates=[
        ("I want to sign up for {} today", "sales"),
        ("{} has been down since yesterday", "tech_support"),
        ("why did my bill go up after I added {}", "billing"),
        ("can you put {} under my wife's name", "account"),
        ("I'd like to cancel {} please", "cancel"),
        ("the {} I bought last week is not working", "tech_support"),
        ("do you have any deals on {} right now", "sales"),
        ("I keep getting an error with {}", "tech_support"),
    ],
    reported=None,
    ordinary=[
        ("when is my next bill due", "billing"),
        ("my calls keep cutting out", "tech_support"),
        ("how do I reset my PIN", "account"),
        ("I need to talk to an agent", "agent"),
        ("I'm moving abroad next month", "account"),
        ("are you open on Sundays", "agent"),
        ("nothing loads on my laptop", "tech_support"),
        ("I paid twice this month", "billing"),
        ("please end my service", "cancel"),
        ("get me a manager", "agent"),
        ("yes correct", "yes"),
        ("no not at all", "no"),
        ("seven eight nine zero", "digits"),
        ("sorry what was that", "repeat"),
        ("return to the previous menu", "back"),
        ("my text messages are not arriving", "tech_support"),
        ("can you email me my statement", "billing"),
        ("what plans do you have for families", "sales"),
        ("my SIM card got damaged", "account"),
        ("I want a faster connection", "sales"),
    ],
    voices=[
        Voice("flite", "awb", 1.1, 110),
        Voice("espeak", "en-us-nyc+Annie", 160, 55),
        Voice("espeak", "en-gb-x-gbclan+m5", 150, 45),
        Voice("flite", "kal16", 0.95, 130),
        Voice("espeak", "en-gb+m6", 155, 40),
        Voice("espeak", "en-gb-scotland+Andy", 150, 50),
        Voice("espeak", "en-us+m8", 165, 45),
        Voice("espeak", "en-029+linda", 150, 55),
        Voice("espeak", "en-gb-x-rp+steph", 145, 60),
        Voice("flite", "awb", 0.9, 95),
    ],
)
SETS = {"validation": VALIDATION, "tuning": TUNING}


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str
    intent: str
    kind: Kind
    named: str  # the product the caller names ("" for ordinary requests)
    hotwords: list[str]  # listed names the caller says
    voice: Voice


def utterances(cs: CallerSet) -> list[Utterance]:
    """The whole set, in a fixed order: listed names, unlisted names, ordinary requests."""
    rows: list[tuple[str, str, Kind, str]] = []
    templates = cs.templates
    for i, name in enumerate(cs.listed):
        for j in range(4):
            template, intent = templates[(i + j) % len(templates)]
            rows.append((template.format(name), intent, "listed", name))
    for i, name in enumerate(cs.unlisted):
        first = cs.reported if i == 0 and cs.reported else templates[(2 * i) % len(templates)]
        for template, intent in (first, templates[(2 * i + 5) % len(templates)]):
            rows.append((template.format(name), intent, "unlisted", name))
    rows += [(text, intent, "ordinary", "") for text, intent in cs.ordinary]
    return [
        Utterance(
            f"{cs.prefix}{n + 1:03d}",
            text,
            intent,
            kind,
            named,
            [named] if kind == "listed" else [],
            cs.voices[n % len(cs.voices)],
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


def render(cs: CallerSet, utt: Utterance, index: int, outdir: Path) -> float:
    """Writes `<id>.wav` (8 kHz mono 16-bit); returns its length in seconds."""
    rng = np.random.default_rng([cs.seed, index])
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


def fingerprint(cs: CallerSet) -> str:
    """Changes whenever the set's texts, voices or seed or the rendering do (a stale cache is rendered
    again), not when another set is edited."""
    code = "".join(inspect.getsource(f) for f in (synthesize, telephone, render))
    spec = json.dumps([cs.seed, [asdict(u) for u in utterances(cs)]]) + code
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def generate(cs: CallerSet = VALIDATION, outdir: Path | None = None, ids: set[str] | None = None) -> Path:
    """Renders the set (or the clips in `ids`) into `outdir` unless it is already there, current."""
    outdir = outdir or cs.default_dir
    stamp = outdir / "fingerprint"
    if ids is None and stamp.exists() and stamp.read_text() == fingerprint(cs):
        return outdir
    outdir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    lines = []
    for index, utt in enumerate(utterances(cs)):
        if ids is not None and utt.id not in ids:
            continue
        seconds = render(cs, utt, index, outdir)
        row = {**asdict(utt), "voice": utt.voice.label, "channel": "g711u-bandpass-noise", "seconds": seconds}
        lines.append(json.dumps(row))
    (outdir / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (outdir / "list.txt").write_text("\n".join(cs.listed) + "\n")
    if ids is None:
        stamp.write_text(fingerprint(cs))
    return outdir


def manifest(cs: CallerSet = VALIDATION, outdir: Path | None = None, ids: set[str] | None = None) -> list[dict]:
    """The manifest's rows, once the set (or the clips in `ids`) is rendered."""
    return [json.loads(line) for line in (generate(cs, outdir, ids) / "manifest.jsonl").read_text().splitlines()]


def set_clips(cs: CallerSet = VALIDATION, outdir: Path | None = None, limit: int | None = None) -> list[Clip]:
    outdir = outdir or cs.default_dir
    rows = manifest(cs, outdir)[:limit]
    return [Clip(cs.name, r["id"], read_wav(str(outdir / f"{r['id']}.wav")), r["text"], r["hotwords"]) for r in rows]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=sorted(SETS), default="validation")
    ap.add_argument("outdir", nargs="?", type=Path)
    args = ap.parse_args()
    out = generate(SETS[args.set], args.outdir)
    print(f"{len(manifest(SETS[args.set], out))} clips in {out}")
