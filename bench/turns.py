"""Turns benchmark: how long callers wait for an answer, measured on the wire.

    .venv/bin/python -m bench.turns [--scenarios single spread20 burst10 burst20] [--single-calls 10]

voicenav runs in this process (as in bench.calls: loopback ports, tiny.en from .cache/test-models,
Redis under a throw-away key prefix); sipp callers each say one callers_dev utterance whose intent is a
queue, through `bench.wire`, a relay in its own process that timestamps every RTP packet both ways. Per
call, the wire gap runs from the caller's last packet with speech energy (μ-law RMS over SPEECH_RMS) to
the first packet of the answer with audible energy (over AUDIBLE_RMS); beside it, the server's own
figure for the turn (the call record's latency_ms, the same as voicenav_turn_latency_seconds).

Scenarios: `single` (calls one after another), `spread20` (20 callers whose speech ends spread over
10 s), `burst10` and `burst20` (callers whose speech ends together: each caller's silent lead-in is set
when its sipp starts, so that all utterances end at one moment; the table shows how close they came).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_engine.audio.g711 import ulaw_decode
from asr_engine.vad import VadConfig

from .common import ROOT, pct, queue_utterances, sipp_bench_parser, table

sys.path.insert(0, str(ROOT / "tests" / "calls"))  # the real-caller helpers the end-to-end tests use

from callers import Running, manifest, running_service, sipp_call, sipp_scenario, ulaw_file

from tests.ports import free_ports

SPEECH_RMS = 500.0  # μ-law RMS of a caller's speech packet; callers_dev line noise stays under 200
AUDIBLE_RMS = 100.0  # the server sends digital silence between prompts
PROMPT_OVERLAP_S = 0.3  # answer audio this close before the end of speech: a prompt still playing
START_S = 7.0  # from the first sipp start to the common end of speech in a burst (longest utterance ~5 s)
SPREAD_S = 10.0
SETUP_S = 0.05  # sipp start to its first RTP packet on loopback (INVITE, 200, ACK)
PACKET = 160  # samples per 20 ms RTP packet at 8 kHz, as sipp sends the file
CALL_LIMIT_S = 75.0  # a misheard call re-prompts, then escalates: it ends within this


@dataclass
class Caller:
    tag: str
    utterance: str
    end_offset_s: float  # when the speech is meant to end on the wire, after the scenario starts


@dataclass
class Turn:
    tag: str
    speech_end: float | None  # wire time of the caller's last packet with speech energy
    answer: float | None  # wire time of the first audible answer packet after it
    overlapped: bool  # a prompt was still audible when the caller stopped talking
    recorded_ms: float | None  # the server's latency_ms for the turn

    @property
    def gap_ms(self) -> float | None:
        if self.speech_end is None or self.answer is None:
            return None
        return (self.answer - self.speech_end) * 1000


@asynccontextmanager
async def wire_tap(server: Running, out: Path) -> AsyncIterator[int]:
    """`bench.wire` between the callers and `server`; yields the port callers send SIP to."""
    port = free_ports()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.wire",
        "--listen",
        f"127.0.0.1:{port}",
        "--server",
        f"127.0.0.1:{server.sip_port}",
        "--out",
        str(out),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            assert (await proc.stdout.readline()).strip() == b"ready"
        yield port
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


def seconds(utterance: str) -> float:
    return float(manifest()[utterance]["seconds"])


@functools.cache
def speech_ends_after(utterance: str, work: Path) -> float:
    """Seconds into the utterance's μ-law file to the end of its last packet with speech energy, as
    the wire analysis will find it (the recordings end in some line noise of varying length)."""
    pcm = ulaw_decode(ulaw_file(utterance, work, tail_s=0.0).read_bytes()).astype(np.float64)
    packets = pcm[: len(pcm) // PACKET * PACKET].reshape(-1, PACKET)
    loud = np.flatnonzero(np.sqrt((packets * packets).mean(axis=1)) > SPEECH_RMS)
    return (loud[-1] + 1) * PACKET / 8000


async def place(caller: Caller, end_at: float, port: int, work: Path) -> int:
    """One sipp call whose speech ends at monotonic `end_at`: the lead-in is fixed as sipp starts."""
    lead = end_at - time.monotonic() - SETUP_S - speech_ends_after(caller.utterance, work.parent)
    if lead < 0:
        print(f"  {caller.tag}: started {-lead:.2f} s late", file=sys.stderr)
    audio = ulaw_file(caller.utterance, work, lead_s=round(max(0.0, lead), 3), tail_s=CALL_LIMIT_S)
    scenario = sipp_scenario(work, caller.tag, f'<exec rtp_stream="{audio},1,0"/>', timeout_ms=int(CALL_LIMIT_S * 1000))
    rc, _ = await sipp_call(scenario, port, work, limit_s=CALL_LIMIT_S + 15)
    return rc


def read_packets(path: Path) -> dict[str, list[tuple[float, str, float]]]:
    """Per caller: (time, direction, RMS) of the PCMU packets, in order."""
    out: dict[str, list[tuple[float, str, float]]] = {}
    for line in path.read_text().splitlines():
        t, tag, direction, pt, rms = line.split("\t")
        if int(pt) == 0:
            out.setdefault(tag, []).append((float(t), direction, float(rms)))
    return out


def wire_turn(tag: str, packets: list[tuple[float, str, float]], recorded_ms: float | None) -> Turn:
    spoken = [t for t, d, r in packets if d == "c2s" and r > SPEECH_RMS]
    if not spoken:
        return Turn(tag, None, None, False, recorded_ms)
    end = spoken[-1]
    heard = [t for t, d, r in packets if d == "s2c" and r > AUDIBLE_RMS]
    answer = next((t for t in heard if t > end), None)
    overlapped = any(end - PROMPT_OVERLAP_S < t <= end for t in heard)
    return Turn(tag, end, answer, overlapped, recorded_ms)


async def recorded_latency(server: Running, tag: str, within: float = 15.0) -> float | None:
    """The server's latency_ms for the call's first spoken turn; the session adds it to the record
    just after the call ends, so wait for it."""
    deadline = time.monotonic() + within
    while True:
        try:
            record = await server.record_of(tag, within=within)
        except AssertionError:
            print(f"  {tag}: no finished call record", file=sys.stderr)
            return None
        spoken = [t for t in record["turns"] if t["event"] == "utterance"]
        if not spoken or spoken[0]["latency_ms"] is not None or time.monotonic() > deadline:
            return spoken[0]["latency_ms"] if spoken else None
        await asyncio.sleep(0.2)


async def run_scenario(server: Running, callers: list[Caller], sequential: bool, work: Path) -> list[Turn]:
    log = work / "packets.tsv"
    for caller in callers:  # before any sipp starts: the lead-ins are computed against the clock
        speech_ends_after(caller.utterance, work.parent)
    async with wire_tap(server, log) as port:
        if sequential:
            for caller in callers:
                await place(caller, time.monotonic() + caller.end_offset_s, port, work)
        else:
            t0 = time.monotonic()
            await asyncio.gather(*(place(c, t0 + c.end_offset_s, port, work) for c in callers))
    packets = read_packets(log)
    turns = []
    for caller in callers:
        recorded = await recorded_latency(server, caller.tag)
        turns.append(wire_turn(caller.tag, packets.get(caller.tag, []), recorded))
    return turns


def callers_for(scenario: str, utterances: list[str], single_calls: int) -> tuple[list[Caller], bool]:
    n = {"single": single_calls, "spread20": 20, "burst10": 10, "burst20": 20}[scenario]
    callers = []
    for i in range(n):
        utterance = utterances[i % len(utterances)]
        if scenario == "single":
            end = 1.0 + seconds(utterance)  # a second of the welcome prompt, then the request
        else:
            end = START_S + (SPREAD_S * i / n if scenario == "spread20" else 0.0)
        callers.append(Caller(f"{scenario}{i:02d}-{uuid.uuid4().hex[:6]}", utterance, end))
    return callers, scenario == "single"


def row(scenario: str, turns: list[Turn]) -> list[str]:
    gaps = [g for t in turns if (g := t.gap_ms) is not None and not t.overlapped]
    recorded = [t.recorded_ms for t in turns if t.recorded_ms is not None]
    diffs = [g - t.recorded_ms for t in turns if (g := t.gap_ms) is not None and t.recorded_ms is not None]
    ends = [t.speech_end for t in turns if t.speech_end is not None]
    spread = "-" if scenario in ("single", "spread20") or not ends else f"{(max(ends) - min(ends)) * 1000:.0f}"
    return [
        scenario,
        str(len(turns)),
        str(len(gaps)),
        str(sum(t.overlapped for t in turns)),
        spread,
        f"{pct(gaps, 50):.0f}",
        f"{pct(gaps, 95):.0f}",
        f"{max(gaps, default=float('nan')):.0f}",
        f"{pct(recorded, 50):.0f}",
        f"{pct(recorded, 95):.0f}",
        f"{pct(diffs, 50):.0f}",
    ]


async def main() -> None:
    ap = sipp_bench_parser(__doc__)
    ap.add_argument(
        "--scenarios",
        nargs="+",
        default=["single", "spread20", "burst10", "burst20"],
        choices=["single", "spread20", "burst10", "burst20"],
    )
    ap.add_argument("--single-calls", type=int, default=10, help="calls of the `single` scenario (1 to 20)")
    ap.add_argument(
        "--early-end-ms",
        type=int,
        default=VadConfig().early_end_ms,
        help="the service's early_end_ms (decode at this pause; 0: off)",
    )
    ap.add_argument(
        "--tail-margin-db",
        type=lambda text: None if text == "none" else float(text),
        default=VadConfig().tail_margin_db,
        help="the service's tail_margin_db (speech ends where the line falls to its noise; 'none': off)",
    )
    ap.add_argument("--per-call", action="store_true", help="each call's figures on stderr")
    args = ap.parse_args()
    if not 1 <= args.single_calls <= 20:
        ap.error("--single-calls: 1 to 20")
    utterances = queue_utterances(manifest())
    rows = []
    with tempfile.TemporaryDirectory(prefix="voicenav-turns-") as tmp:
        sections = {
            "calls": {"max_calls": 32},
            "recognizer": {"max_batch": args.max_batch},
            "vad": {"early_end_ms": args.early_end_ms or None, "tail_margin_db": args.tail_margin_db},
            # Every caller comes from the relay's one address: a burst of 20 INVITEs is the test.
            "sip": {"access": {"invite_rate": {"rate_per_s": 50.0, "burst": 50}}},
        }
        async with running_service(**sections) as server:
            for scenario in args.scenarios:
                work = Path(tmp) / scenario
                work.mkdir()
                callers, sequential = callers_for(scenario, utterances, args.single_calls)
                async with asyncio.timeout(CALL_LIMIT_S * (len(callers) if sequential else 1) + 120):
                    turns = await run_scenario(server, callers, sequential, work)
                rows.append(row(scenario, turns))
                if args.per_call:
                    for t in turns:
                        gap = "-" if t.gap_ms is None else f"{t.gap_ms:.0f}"
                        extra = " (prompt overlap)" if t.overlapped else ""
                        print(f"  {t.tag}: wire {gap} ms, recorded {t.recorded_ms} ms{extra}", file=sys.stderr)
                print(f"{scenario} done", file=sys.stderr, flush=True)
    headers = [
        "scenario",
        "calls",
        "measured",
        "prompt overlap",
        "speech ends within ms",
        "wire gap p50 ms",
        "p95 ms",
        "max ms",
        "recorded p50 ms",
        "p95 ms",
        "wire - recorded p50 ms",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    asyncio.run(main())
