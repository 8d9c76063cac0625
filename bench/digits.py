"""Per-digit accuracy of spoken account numbers, with and without the digits grammar.

Two sets, each of 6-10 digit numbers read once in two groups with a 700 ms breath between them and once
without a pause (`bench/digit_sets.py`): Allison's recorded digits strung together (real speech) and
flite / espeak-ng voices through a telephone channel (synthetic). Each number is decoded as
`voicenav transcribe` does (VAD chunks, the recognizer), and with `--calls` also said by a sipp caller
at the demo flow's account-number node, the number read from the call's confirm prompt. A hypothesis is
the digits the dialog reads in the transcript (`dialog.grammars.parse_digits`), aligned to the number
said: substitutions, deletions and insertions per digit said.

    nice -n 10 .venv/bin/python -m bench.digits [--numbers 30] [--boosts 0,1.5] [--calls 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_engine.audio.g711 import ulaw_encode
from asr_engine.audio.wav import Audio
from asr_engine.config import DecodeConfig, EngineConfig, RecognizerConfig
from asr_engine.recognizer import Recognizer
from asr_engine.transcribe import transcribe_audio
from asr_engine.vad import SileroVad
from dialog.grammars import normalize, parse_digits
from ivr.app.biasing import grammar_vocabulary

from .common import ROOT, table
from .digit_sets import RATE, Number, asterisk_numbers, tts_available, tts_numbers
from .splits import HALVES, half_of

sys.path.insert(0, str(ROOT / "tests" / "calls"))  # the real-caller helpers the end-to-end tests use

from callers import running_service, sipp_call, sipp_scenario

SILENCE_S = 0.5  # around each number in a recording


@dataclass
class Tally:
    numbers: int = 0
    exact: int = 0
    said: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0

    def add(self, ref: str, hyp: str) -> None:
        s, d, i = align(ref, hyp)
        self.numbers += 1
        self.exact += hyp == ref
        self.said += len(ref)
        self.sub, self.dele, self.ins = self.sub + s, self.dele + d, self.ins + i

    def row(self) -> list:
        acc = 100.0 * (self.said - self.sub - self.dele - self.ins) / max(1, self.said)
        exact = 100.0 * self.exact / max(1, self.numbers)
        return [self.numbers, self.said, self.sub, self.dele, self.ins, f"{acc:.1f}", f"{exact:.0f}"]


def align(ref: str, hyp: str) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of the cheapest alignment of `hyp` to `ref`."""
    # cost[i][j]: (edits, subs, dels, ins) aligning ref[:i] to hyp[:j]
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            e, s, d, n = prev[j - 1]
            diag = (e, s, d, n) if ref[i - 1] == hyp[j - 1] else (e + 1, s + 1, d, n)
            e, s, d, n = prev[j]
            up = (e + 1, s, d + 1, n)
            e, s, d, n = cur[j - 1]
            left = (e + 1, s, d, n + 1)
            cur.append(min(diag, up, left))
        prev = cur
    _, s, d, n = prev[-1]
    return s, d, n


def heard(text: str) -> str:
    return parse_digits(normalize(text)).digits


def recording(number: Number) -> Audio:
    pad = np.zeros(int(SILENCE_S * RATE), np.int16)
    pcm = np.concatenate([pad, number.pcm, pad])
    return Audio(pcm.astype(np.float32) / 32768, RATE)


def direct(recognizer: Recognizer, vad: SileroVad, numbers: list[Number], boost: float) -> list[str]:
    """`voicenav transcribe` on each number, the digits grammar's vocabulary boosted by `boost`."""
    biaser = grammar_vocabulary(recognizer.tokenizer, "digits", boost)
    return [heard(transcribe_audio(recognizer, vad, recording(n), biaser).text) for n in numbers]


async def by_calls(numbers: list[Number], boost: float, model: str) -> list[str]:
    """Each number said by a sipp caller at the demo flow's account-number node; the digits of its
    confirm prompt ("I have 8 2 6 ..."), "" when the dialog read back none."""
    flow_dir = Path(tempfile.mkdtemp(prefix="digits-bench-"))
    flow = flow_dir / "demo.yaml"
    flow.write_text((ROOT / "dialog/flows/demo.yaml").read_text().replace("storable: false", "storable: true"))
    out = []
    recognizer = {"model": model, "decode": {"grammar_boost": boost}}
    async with running_service(dialog={"flow": flow}, recognizer=recognizer) as server:
        for n in numbers:
            caller = f"digits-{uuid.uuid4().hex[:8]}"
            pcm = np.concatenate([n.pcm, np.zeros(3 * RATE, np.int16)])
            pcm = np.concatenate([pcm, np.zeros(-len(pcm) % 160, np.int16)])
            audio = flow_dir / f"{caller}.ulaw"
            audio.write_bytes(ulaw_encode(pcm))
            media = (
                '<exec play_dtmf="4,120"/></action></nop>\n'
                '  <pause milliseconds="7000"/>\n'
                f'  <nop><action><exec rtp_stream="{audio},1,0"/></action></nop>\n'
                f'  <pause milliseconds="{len(pcm) * 1000 // RATE + 2500}"/>\n'
                '  <nop><action><exec play_dtmf="1,120"/>'
            )
            scenario = sipp_scenario(flow_dir, caller, media, timeout_ms=30000)
            await sipp_call(scenario, server.sip_port, flow_dir, limit_s=60)
            record = await server.record_of(caller)
            prompts = [
                p for t in record["turns"] if t["node"] == "account_number" for p in t["prompts"] if "I have" in p
            ]
            out.append(heard(prompts[0].split("I have", 1)[1].split(".")[0]) if prompts else "")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--numbers", type=int, default=30, help="numbers per set, each read twice (grouped, whole)")
    ap.add_argument("--boosts", default=f"0,{DecodeConfig().grammar_boost:g}", help="grammar boosts; 0: none")
    ap.add_argument("--sets", default="asterisk,tts")
    ap.add_argument("--calls", type=int, default=0, help="also say this many numbers of each set over SIP")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cache = Path(os.environ.get("VOICENAV_TEST_CACHE", Path.home() / ".cache" / "voicenav"))
    cfg = RecognizerConfig(model=args.model, engine=EngineConfig(cache_dir=cache, intra_op_threads=args.threads))
    recognizer, vad = Recognizer(cfg), SileroVad()
    boosts = [float(b) for b in args.boosts.split(",")]
    sets: dict[str, list[Number]] = {}
    for name in args.sets.split(","):
        if name == "tts" and not tts_available():
            raise SystemExit("flite and espeak-ng are needed for the tts set")
        sets[name] = asterisk_numbers(args.numbers) if name == "asterisk" else tts_numbers(args.numbers)
    rows = []
    for name, numbers in sets.items():
        for boost in boosts:
            t0 = time.perf_counter()
            paths = [("recognizer", numbers, direct(recognizer, vad, numbers, boost))]
            if args.calls:
                said = numbers[: 2 * args.calls]
                paths.append(("sip call", said, asyncio.run(by_calls(said, boost, args.model))))
            for path, said, hyps in paths:
                for half in HALVES:
                    for paused in (True, False):
                        tally = Tally()
                        for n, hyp in zip(said, hyps, strict=True):
                            if half_of(f"digits-{name}", n.key) == half and (len(n.groups) > 1) == paused:
                                tally.add(n.digits, hyp)
                        reading = "700 ms breath" if paused else "no pause"
                        if tally.numbers:
                            rows.append([name, path, half, reading, f"{boost:g}", *tally.row()])
            print(f"{name} boost {boost:g}: {time.perf_counter() - t0:.0f} s", flush=True)
    headers = ["set", "path", "half", "reading", "boost", "numbers", "digits", "sub", "del", "ins", "digit acc %"]
    print(table([*headers, "numbers exact %"], rows))


if __name__ == "__main__":
    main()
