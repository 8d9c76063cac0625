"""Hot-word benchmark: recall of listed product names and false alarms, per set and half.

    .venv/bin/python -m bench.hotwords [--sets callers,asterisk,callers-tun,callers-val] [--halves tuning,validation]
        [--modes call,recording] [--asterisk N] [--beam 1,4] [--before] [--overhead] [--cache-dir DIR]

Sets: callers_dev with its six names, the Asterisk dev recordings (no product names: every listed
name in a transcript is a false alarm) with the same list loaded, and the two synthetic caller sets
of `bench.make_callers`, each with its own list (other names, phrasings and voices): the tuning
callers, to choose settings by, and the validation callers, never tuned on (both reported whole).
Modes: a call's turn (one decode with the graph and the phrases as prompt, readings weighed:
`Biasing.weigh`) and a recording (`Biasing.refine`). False alarms are listed names a
transcript holds that its utterance does not say, counted apart for ordinary requests, for callers
naming an unlisted product, and for callers naming another listed one. `--before` adds each row as
it was before the check against the unbiased reading (`Biasing._gate`).

`--overhead` prints the earlier comparison on callers_dev instead: voicenav without and with the
lists, faster-whisper with its prompt `hotwords` option, and the decode-time overhead of a catalogue
of 1,000 phrases.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from asr_engine.audio.resample import resample
from asr_engine.config import DecodeConfig, EngineConfig, RecognizerConfig, default_cache_dir
from asr_engine.recognizer import Recognizer
from asr_engine.transcribe import transcribe_audio
from asr_engine.vad import SileroVad
from hotwords.schema import Entry
from ivr.app.biasing import Biasing

from .common import Clip, asterisk_clips, caller_clips, normalize, table, wer
from .make_callers import TUNING, VALIDATION, CallerSet, manifest, set_clips
from .splits import HALVES, split


def contains(hyp: str, phrase: str) -> bool:
    return f" {normalize(phrase)} " in f" {normalize(hyp)} "


def false_alarms(clip: Clip, hyp: str, phrases: list[str]) -> int:
    return sum(contains(hyp, p) for p in phrases if p not in clip.hotwords)


def score(clips: list[Clip], hyps: list[str], phrases: list[str]) -> dict:
    hot = [(c, h) for c, h in zip(clips, hyps, strict=True) if c.hotwords]
    plain = [(c, h) for c, h in zip(clips, hyps, strict=True) if not c.hotwords]
    found = sum(contains(h, p) for c, h in hot for p in c.hotwords)
    wanted = sum(len(c.hotwords) for c, _ in hot)
    false = sum(false_alarms(c, h, phrases) for c, h in zip(clips, hyps, strict=True))
    return {
        "recall": found / wanted if wanted else float("nan"),
        "wer_plain": wer([c.text for c, _ in plain], [h for _, h in plain]) if plain else float("nan"),
        "false": false,
    }


class Ours:
    def __init__(self, beam: int, cache_dir: Path) -> None:
        engine = EngineConfig(intra_op_threads=2, cache_dir=cache_dir)
        cfg = RecognizerConfig(decode=DecodeConfig(beam_size=beam), engine=engine)
        self.rec = Recognizer(cfg)
        self.rec.warmup()
        self.vad = SileroVad()

    def rec_dir(self) -> Path:
        from asr_engine.models.registry import resolve_model

        return resolve_model(self.rec.config.model_name(), self.rec.config.engine.cache_dir)

    def biasing(self, phrases: list[str]) -> Biasing | None:
        return Biasing.from_entries([Entry(phrase=p) for p in phrases], self.rec.tokenizer) if phrases else None

    def one(self, clip: Clip, biasing: Biasing | None, mode: str = "recording") -> str:
        if biasing is None:
            return transcribe_audio(self.rec, self.vad, clip.audio).text
        if mode == "call":
            graph, weigh = biasing.graph, partial(biasing.weigh, self.rec)
            return transcribe_audio(
                self.rec, self.vad, clip.audio, biaser=graph, prompt=graph.prompt, refine=weigh
            ).text
        refine = partial(biasing.refine, self.rec)
        return transcribe_audio(self.rec, self.vad, clip.audio, biaser=biasing.graph, refine=refine).text

    def run(self, clips: list[Clip], phrases: list[str]) -> tuple[list[str], float]:
        biasing = self.biasing(phrases)
        t0 = time.perf_counter()
        hyps = [self.one(c, biasing) for c in clips]
        return hyps, time.perf_counter() - t0

    def paired(self, clips: list[Clip], phrases: list[str], reps: int) -> tuple[list[str], float, float]:
        """Hypotheses with `phrases`, and total seconds without and with them over `reps` passes. Each
        clip is decoded both ways back to back, so both see the same machine: on a shared 2-core host
        whole runs drift by 10-20%, more than the overhead being measured."""
        biasing = self.biasing(phrases)
        plain_t = biased_t = 0.0
        hyps: list[str] = []
        for _ in range(reps):
            hyps = []
            for c in clips:
                t0 = time.perf_counter()
                self.one(c, None)
                t1 = time.perf_counter()
                hyps.append(self.one(c, biasing))
                plain_t += t1 - t0
                biased_t += time.perf_counter() - t1
        return hyps, plain_t, biased_t


def faster_whisper(model_dir: Path, clips: list[Clip], phrases: list[str], beam: int) -> tuple[list[str], float]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)
    hyps, t0 = [], time.perf_counter()
    for c in clips:
        x = resample(c.audio.samples, c.audio.sample_rate, 16000)
        segs, _ = model.transcribe(
            x, beam_size=beam, language="en", without_timestamps=True, hotwords=", ".join(phrases) or None
        )
        hyps.append(" ".join(s.text.strip() for s in segs))
    return hyps, time.perf_counter() - t0


def synthetic_phrases(n: int, seed: int = 3) -> list[str]:
    """Made-up product names: pronounceable, unknown to the model, like a real catalogue."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "ve", "tri", "zen", "mor", "qui", "bel", "dra", "nix", "sol", "tav", "ru", "pex"]
    nouns = ["plan", "router", "wallet", "bundle", "card", "box", "plus", "family", "roaming", "fiber"]
    out: set[str] = set()
    while len(out) < n:
        name = "".join(rng.choice(syll) for _ in range(rng.randint(2, 3))).capitalize()
        out.add(f"{name} {rng.choice(nouns)}")
    return sorted(out)


def overhead(callers: list[Clip], real: list[Clip], beams: list[int], reps: int, cache_dir: Path) -> None:
    dev = sorted({p for c in callers for p in c.hotwords})
    rows = []
    for beam in beams:
        ours = Ours(beam, cache_dir)
        base_hyps, base_t = ours.run(callers, [])
        hot_hyps, hot_t = ours.run(callers, dev)
        real_base, _ = ours.run(real, [])
        real_hot, _ = ours.run(real, dev)
        fw_hyps, fw_t = faster_whisper(ours.rec_dir(), callers, dev, beam)
        real_wer = (wer([c.text for c in real], real_base), wer([c.text for c in real], real_hot))
        for name, hyps, t, rw in (
            ("voicenav, no lists", base_hyps, base_t, real_wer[0]),
            ("voicenav, dev lists", hot_hyps, hot_t, real_wer[1]),
            ("faster-whisper, prompt hotwords", fw_hyps, fw_t, float("nan")),
        ):
            s = score(callers, hyps, dev)
            rows.append(
                [beam, name, f"{s['recall']:.2f}", f"{s['wer_plain']:.1f}", s["false"], f"{rw:.2f}", f"{t:.1f}"]
            )
        # Decode-time overhead of a large catalogue (1,000 phrases + the dev ones), same clips.
        big = synthetic_phrases(1000) + dev
        big_hyps, base_t2, big_t = ours.paired(callers, big, reps)
        # The dev phrases inside the catalogue: too long for the prompt, so graph and post-pass only.
        s = score(callers, big_hyps, big)
        rows.append(
            [
                beam,
                "voicenav, dev lists in 1,006 phrases",
                f"{s['recall']:.2f}",
                f"{s['wer_plain']:.1f}",
                s["false"],
                "",
                f"{big_t / reps:.1f} ({100 * (big_t / base_t2 - 1):+.0f}% vs {base_t2 / reps:.1f})",
            ]
        )
    print("\nHot words on callers_dev (30 utterances with a product name, 16 without), Whisper tiny.en\n")
    headers = ["beam", "system", "recall", "WER % w/o hot words", "false alarms", "WER % real", "decode s"]
    print(table(headers, rows))


def gating_row(clips: list[Clip], hyps: list[str], phrases: list[str], kinds: dict[str, str]) -> list[str]:
    """recall, then false alarms on ordinary requests, on unlisted products, on other listed names."""
    s = score(clips, hyps, phrases)
    false = {"ordinary": 0, "unlisted": 0, "listed": 0}
    for c, h in zip(clips, hyps, strict=True):
        false[kinds.get(c.key, "listed" if c.hotwords else "ordinary")] += false_alarms(c, h, phrases)
    named = sum(1 for c in clips if c.hotwords)
    recall = f"{s['recall']:.2f} of {named}" if named else ""
    return [recall, str(false["ordinary"]), str(false["unlisted"]), str(false["listed"])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beam", default="1")
    ap.add_argument("--sets", default="callers,asterisk,callers-tun,callers-val")
    ap.add_argument("--halves", default=",".join(HALVES), help="tuning, validation or both")
    ap.add_argument("--modes", default="call,recording", help="call (Biasing.weigh), recording (Biasing.refine)")
    ap.add_argument("--asterisk", type=int, default=60, help="Asterisk dev clips (before the split)")
    ap.add_argument("--before", action="store_true", help="also each row as before the unbiased-reading check")
    ap.add_argument("--overhead", action="store_true", help="the earlier comparison and overhead table instead")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions of the overhead runs")
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="converted models")
    args = ap.parse_args()
    beams = [int(b) for b in args.beam.split(",")]
    callers = caller_clips()
    dev = sorted({p for c in callers for p in c.hotwords})
    if args.overhead:
        overhead(callers, asterisk_clips(args.asterisk), beams, args.reps, args.cache_dir)
        return
    made: dict[str, tuple[str, CallerSet]] = {
        "callers-tun": ("callers tuning", TUNING),
        "callers-val": ("callers validation", VALIDATION),
    }
    kinds = {r["id"]: r["kind"] for key, (_, cs) in made.items() if key in args.sets.split(",") for r in manifest(cs)}
    sets = {
        "callers": ("callers_dev", lambda: callers, dev, True),
        "asterisk": ("Asterisk dev", lambda: asterisk_clips(args.asterisk), dev, True),
        **{key: (label, partial(set_clips, cs), cs.listed, False) for key, (label, cs) in made.items()},
    }
    rows = []
    for beam in beams:
        ours = Ours(beam, args.cache_dir)
        for name in args.sets.split(","):
            label, load, phrases, halved = sets[name]
            groups = split(load()) if halved else {"whole set": load()}
            now = ours.biasing(phrases)
            assert now is not None
            systems = [("now", now)]
            if args.before:
                systems.append(("before", replace(now, plain_margin=math.inf, decoys=0)))
            for half, clips in groups.items():
                if halved and half not in args.halves.split(","):
                    continue
                for mode in args.modes.split(","):
                    for system, biasing in systems:
                        t0 = time.perf_counter()
                        hyps = [ours.one(c, biasing, mode) for c in clips]
                        took = time.perf_counter() - t0
                        row = [beam, mode, system, label, half, len(clips)]
                        rows.append([*row, *gating_row(clips, hyps, phrases, kinds), f"{took:.1f}"])
                        print(table(HEADERS, rows[-1:]), flush=True)
    print("\nHot words per set and half, Whisper tiny.en\n")
    print(table(HEADERS, rows))


HEADERS = [
    "beam",
    "mode",
    "system",
    "set",
    "half",
    "clips",
    "recall",
    "false alarms: ordinary",
    "false alarms: unlisted product",
    "false alarms: other listed name",
    "s",
]


if __name__ == "__main__":
    main()
