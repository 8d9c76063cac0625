"""ASR benchmark: voicenav's engine and faster-whisper side by side, same weights, same threads.

    .venv/bin/python -m bench.asr [--model tiny.en|base] [--limit N] [--streams 1,4,16]

Part 1, accuracy and single-stream latency: every clip of the real Asterisk recordings (8 kHz: the
prompts listed for development, and the held-out rest) and of the synthetic callers, one at a time,
through each system: WER (numbers compared by their digits however they are written, so "12" scores
as "twelve": `bench.numbers`), real-time factor, latency p50/p95 (all clips and clips under 5 s). Every
set is reported as its tuning and its validation half (`bench.splits`): settings are chosen on the
tuning half, and the validation half is the result. Part 2, load: N concurrent callers each sending
utterances one after another (closed loop) for a bounded number of utterances: latency p50/p95 and
throughput (`--streams ""` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from asr_engine.audio.resample import resample
from asr_engine.batcher import BatchingRecognizer
from asr_engine.config import EngineConfig, RecognizerConfig
from asr_engine.recognizer import Recognizer, Utterance
from asr_engine.segmenter import speech_chunks
from asr_engine.transcribe import transcribe_audio
from asr_engine.vad import RATE, SileroVad

from .common import Clip, asterisk_clips, asterisk_heldout_clips, caller_clips, pct, table, wer
from .splits import HALVES, split

SETS = {
    "dev": ("Asterisk dev (real, 8 kHz)", asterisk_clips),
    "heldout": ("Asterisk held-out (real, 8 kHz)", asterisk_heldout_clips),
    "callers": ("callers (synthetic)", caller_clips),
}


INT8_NAMES = {"both": "onnx int8", "encoder": "onnx int8 encoder", "decoder": "onnx int8 decoder", "none": "onnx fp32"}


class Ours:
    def __init__(self, model: str, threads: int, window: str, max_batch: int, int8: str = "both") -> None:
        engine = EngineConfig(intra_op_threads=threads, int8=int8)
        cfg = RecognizerConfig(model=model, encoder_window=window, max_batch=max_batch, engine=engine)
        self.rec = Recognizer(cfg)
        self.rec.warmup()
        self.vad = SileroVad()
        self.name = f"voicenav ({window}, {INT8_NAMES[int8]})"

    def transcribe(self, clip: Clip) -> str:
        return transcribe_audio(self.rec, self.vad, clip.audio).text


class FasterWhisper:
    def __init__(self, model_dir: str, threads: int) -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
        self.name = "faster-whisper 1.2.1 (int8)"
        self.lock = threading.Lock()  # one model instance, as one would serve it

    def transcribe(self, clip: Clip) -> str:
        x = resample(clip.audio.samples, clip.audio.sample_rate, 16000)
        with self.lock:
            segs, _ = self.model.transcribe(x, beam_size=1, language="en", without_timestamps=True)
            return " ".join(s.text.strip() for s in segs)


def accuracy(system, clips: list[Clip]) -> dict:
    hyps, lat = [], []
    for c in clips:
        t0 = time.perf_counter()
        hyps.append(system.transcribe(c))
        lat.append(time.perf_counter() - t0)
    audio = sum(c.audio.seconds for c in clips)
    short = [t for t, c in zip(lat, clips, strict=True) if c.audio.seconds < 5]
    return {
        "wer": wer([c.text for c in clips], hyps),
        "rtf": sum(lat) / audio,
        "p50": pct(lat, 50),
        "p95": pct(lat, 95),
        "p50_short": pct(short, 50),
        "hyps": hyps,
    }


async def load_ours(ours: Ours, clips: list[Clip], streams: int, per_stream: int, max_batch: int) -> dict:
    batcher = BatchingRecognizer(ours.rec, max_batch=max_batch, max_wait_ms=10, queue_size=64)
    # The VAD has cut each utterance already when it reaches the recognizer, as in a call.
    utts = [
        Utterance(ch.samples, RATE)
        for c in clips
        for ch in speech_chunks(c.audio.samples, c.audio.sample_rate, ours.vad)
    ]
    lat: list[float] = []

    async def caller(i: int) -> None:
        for j in range(per_stream):
            u = utts[(i * per_stream + j) % len(utts)]
            t0 = time.perf_counter()
            await batcher.transcribe(u)
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(streams)))
    wall = time.perf_counter() - t0
    batcher.close()
    return {"p50": pct(lat, 50), "p95": pct(lat, 95), "tput": len(lat) / wall}


def load_fw(fw: FasterWhisper, clips: list[Clip], streams: int, per_stream: int) -> dict:
    lat: list[float] = []

    def caller(i: int) -> None:
        for j in range(per_stream):
            c = clips[(i * per_stream + j) % len(clips)]
            t0 = time.perf_counter()
            fw.transcribe(c)
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(caller, range(streams)))
    wall = time.perf_counter() - t0
    return {"p50": pct(lat, 50), "p95": pct(lat, 95), "tput": len(lat) / wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en", help="tiny.en, base, or a model directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, help="clips per half of each set (default: all)")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    ap.add_argument("--halves", default=",".join(HALVES), help="tuning, validation or both")
    ap.add_argument("--no-reference", action="store_true", help="voicenav only, without faster-whisper")
    ap.add_argument("--errors", help="write every clip's reference and transcripts here (JSON lines)")
    ap.add_argument("--window", default="spliced", choices=["spliced", "full", "utterance"])
    ap.add_argument("--streams", default="1,4,16")
    ap.add_argument("--load-utterances", type=int, default=48, help="utterances per load level (bounded)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument(
        "--int8",
        default="both",
        help=f"comma-separated int8 choices, one voicenav system each, of {', '.join(INT8_NAMES)} (the first one "
        "runs the load part)",
    )
    args = ap.parse_args()

    variants = [Ours(args.model, args.threads, args.window, args.max_batch, v) for v in args.int8.split(",")]
    ours = variants[0]
    systems: list[Ours | FasterWhisper] = list(variants)
    if not args.no_reference:
        from asr_engine.models.registry import resolve_model

        model_dir = resolve_model(ours.rec.config.model_name(), ours.rec.config.engine.cache_dir)
        systems.append(FasterWhisper(str(model_dir), args.threads))
    halves = args.halves.split(",")
    sets: dict[tuple[str, str], list[Clip]] = {}
    for name in args.sets.split(","):
        label, load = SETS[name]
        for half, clips in split(load()).items():
            if half in halves:
                sets[(label, half)] = clips[: args.limit]

    rows, records = [], []
    for (label, half), clips in sets.items():
        results = [accuracy(system, clips) for system in systems]
        rows.append(
            [
                label,
                half,
                len(clips),
                *(f"{r['wer']:.2f}" for r in results),
                *(f"{r['rtf']:.3f}" for r in results),
                *(f"{r['p50'] * 1000:.0f}" for r in results),
                *(f"{r['p95'] * 1000:.0f}" for r in results),
                *(f"{r['p50_short'] * 1000:.0f}" for r in results),
            ]
        )
        for i, c in enumerate(clips):
            hyps = {system.name: r["hyps"][i] for system, r in zip(systems, results, strict=True)}
            records.append({"set": c.set, "half": half, "key": c.key, "ref": c.text, **hyps})
    if args.errors:
        Path(args.errors).write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"\nAccuracy and single-stream latency ({args.model}, {args.threads} threads, greedy)")
    print("; ".join(f"{chr(65 + i)}: {system.name}" for i, system in enumerate(systems)) + "\n")
    tags = [chr(65 + i) for i in range(len(systems))]
    metrics = ["WER %", "RTF", "p50 ms", "p95 ms", "p50 ms <5 s"]
    print(table(["set", "half", "clips", *(f"{m} {t}" for m in metrics for t in tags)], rows))
    if not args.streams:
        return

    short = [c for clips in sets.values() for c in clips if c.audio.seconds < 5][: args.load_utterances]
    rows = []
    for n in (int(s) for s in args.streams.split(",")):
        per = max(1, args.load_utterances // n)
        loads = [(ours.name, asyncio.run(load_ours(ours, short, n, per, args.max_batch)))]
        loads += [(fw.name, load_fw(fw, short, n, per)) for fw in systems[1:] if isinstance(fw, FasterWhisper)]
        for name, r in loads:
            rows.append([n, name, n * per, f"{r['p50'] * 1000:.0f}", f"{r['p95'] * 1000:.0f}", f"{r['tput']:.2f}"])
    print(f"\nConcurrent streams (utterances < 5 s, closed loop, max batch {args.max_batch})\n")
    print(table(["streams", "system", "utterances", "p50 ms", "p95 ms", "utt/s"], rows))


if __name__ == "__main__":
    main()
