"""The VAD's CPU time per call-second, one inference per stream per 32 ms chunk (as each call ran it)
against one inference per round for all streams (`SileroVad.probabilities`), in the same process.

    .venv/bin/python -m bench.vad [--streams 4 10 20] [--seconds 10]

Each stream is real speech as a caller sends it (8 kHz, then the VAD's 16 kHz): callers_dev and
asterisk_dev clips back to back, each stream starting at a different clip. Nothing is tuned here;
the figures are CPU seconds (process time), so a loaded machine slows both sides alike, and the
ratio is what to read.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from asr_engine.vad import CHUNK, RATE, SileroVad, VadState

from .common import asterisk_clips, caller_clips, table
from .endpointing import as_caller_sends


def streams(n: int, seconds: float) -> list[np.ndarray]:
    """`n` streams of `seconds` of speech each."""
    clips = [as_caller_sends(c) for c in caller_clips() + asterisk_clips()]
    want = int(seconds * RATE) // CHUNK * CHUNK
    out = []
    for i in range(n):
        parts, have, k = [], 0, i
        while have < want:
            parts.append(clips[k % len(clips)])
            have += len(parts[-1])
            k += n
        out.append(np.concatenate(parts)[:want])
    return out


def one_by_one(vad: SileroVad, audio: list[np.ndarray]) -> float:
    states = [VadState() for _ in audio]
    t = time.process_time()
    for k in range(0, len(audio[0]), CHUNK):
        for s, a in zip(states, audio, strict=True):
            vad.probability(s, a[k : k + CHUNK])
    return time.process_time() - t


def batched(vad: SileroVad, audio: list[np.ndarray]) -> float:
    states = [VadState() for _ in audio]
    t = time.process_time()
    for k in range(0, len(audio[0]), CHUNK):
        vad.probabilities(states, np.stack([a[k : k + CHUNK] for a in audio]))
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, nargs="+", default=[4, 10, 20], help="batch sizes to try")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per stream")
    args = ap.parse_args()
    vad = SileroVad()
    audio = streams(max(args.streams), args.seconds)
    one_by_one(vad, audio[:1])  # warm the session up
    rows = []
    for b in args.streams:
        call_s = b * args.seconds
        single, batch = one_by_one(vad, audio[:b]), batched(vad, audio[:b])
        rows.append(
            [
                str(b),
                f"{single / call_s * 1000:.2f}",
                f"{batch / call_s * 1000:.2f}",
                f"{batch / single:.2f}",
            ]
        )
    headers = ["streams", "one by one: CPU ms per call-s", "batched: CPU ms per call-s", "batched / one by one"]
    print(table(headers, rows))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
