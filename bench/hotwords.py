"""Hot-word benchmark on the caller set: recall of product names, false alarms and WER on the
utterances without them, and decode-time overhead of a large list.

    .venv/bin/python -m bench.hotwords [--beam 1,4]

Side by side in one run, same weights, same threads: voicenav without lists, voicenav with the dev
lists (biasing graph + prompt + post-pass), and faster-whisper with its prompt `hotwords` option.
The real Asterisk recordings (no hot words in them) are decoded with and without the lists too: a
list must not change what ordinary callers say.
"""

from __future__ import annotations

import argparse
import random
import time
from functools import partial
from pathlib import Path

from asr_engine.audio.resample import resample
from asr_engine.config import DecodeConfig, EngineConfig, RecognizerConfig
from asr_engine.recognizer import Recognizer
from asr_engine.transcribe import transcribe_audio
from asr_engine.vad import SileroVad
from hotwords.schema import Entry
from ivr.app.biasing import Biasing

from .common import Clip, asterisk_clips, caller_clips, normalize, table, wer


def contains(hyp: str, phrase: str) -> bool:
    return f" {normalize(phrase)} " in f" {normalize(hyp)} "


def score(clips: list[Clip], hyps: list[str], phrases: list[str]) -> dict:
    hot = [(c, h) for c, h in zip(clips, hyps, strict=True) if c.hotwords]
    plain = [(c, h) for c, h in zip(clips, hyps, strict=True) if not c.hotwords]
    found = sum(contains(h, p) for c, h in hot for p in c.hotwords)
    wanted = sum(len(c.hotwords) for c, _ in hot)
    false = sum(contains(h, p) for c, h in zip(clips, hyps, strict=True) for p in phrases if p not in c.hotwords)
    return {
        "recall": found / wanted if wanted else float("nan"),
        "wer_plain": wer([c.text for c, _ in plain], [h for _, h in plain]) if plain else float("nan"),
        "false": false,
    }


class Ours:
    def __init__(self, beam: int) -> None:
        cfg = RecognizerConfig(decode=DecodeConfig(beam_size=beam), engine=EngineConfig(intra_op_threads=2))
        self.rec = Recognizer(cfg)
        self.rec.warmup()
        self.vad = SileroVad()

    def rec_dir(self) -> Path:
        from asr_engine.models.registry import resolve_model

        return resolve_model(self.rec.config.model_name(), self.rec.config.engine.cache_dir)

    def biasing(self, phrases: list[str]) -> Biasing | None:
        return Biasing.from_entries([Entry(phrase=p) for p in phrases], self.rec.tokenizer) if phrases else None

    def one(self, clip: Clip, biasing: Biasing | None) -> str:
        if biasing is None:
            return transcribe_audio(self.rec, self.vad, clip.audio).text
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beam", default="1,4")
    ap.add_argument("--asterisk", type=int, default=100, help="real clips checked for false alarms")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions of the overhead runs")
    args = ap.parse_args()
    callers = caller_clips()
    real = asterisk_clips(args.asterisk)
    dev = sorted({p for c in callers for p in c.hotwords})
    rows = []
    for beam in (int(b) for b in args.beam.split(",")):
        ours = Ours(beam)
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
        big_hyps, base_t2, big_t = ours.paired(callers, big, args.reps)
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
                f"{big_t / args.reps:.1f} ({100 * (big_t / base_t2 - 1):+.0f}% vs {base_t2 / args.reps:.1f})",
            ]
        )
    print("\nHot words on callers_dev (30 utterances with a product name, 16 without), Whisper tiny.en\n")
    headers = ["beam", "system", "recall", "WER % w/o hot words", "false alarms", "WER % real", "decode s"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
