"""Calls benchmark: N concurrent sipp callers against voicenav, end to end, on loopback.

    .venv/bin/python -m bench.calls [--calls 1 5 10 20] [--listen 0 10] [--ramp 1.0] [--max-batch 8]
                                   [--no-redis]

For each N: voicenav runs in this process (SIP and HTTP on free loopback ports, the tiny.en model from
.cache/test-models, Redis at 127.0.0.1:6379 under a throw-away key prefix unless --no-redis); N sipp
processes (started over --ramp seconds) each place one call and say one callers_dev utterance
(G.711 μ-law, the utterances with a queue as their intent, in turn), over the welcome prompt. The
table: calls attempted / completed (sipp saw the call through to the IVR's BYE) / routed to the
manifest's queue, the server's own per-turn latency from the end of speech (VAD) to the start of
the answering prompt (p50/p95/max, from the call records), and the CPU this process used (server;
sipp runs in its own processes) and the whole machine used over the run, in cores.

Every round keeps all N calls up together (each lasts longer than the ramp). --listen sets when the
callers start talking: 0 = all at once (every end of speech within ~2 s: a burst the recognizer must
work through one utterance after another), 10 = spread over the first 10 s of the welcome prompt, as
callers who listen to part of the menu do.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .common import ROOT, pct, queue_utterances, sipp_bench_parser, table

sys.path.insert(0, str(ROOT / "tests" / "calls"))  # the real-caller helpers the end-to-end tests use

from callers import manifest, running_service, sipp_call, sipp_scenario, ulaw_file


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


async def one_round(
    n: int, ramp: float, listen: float, utterances: list[str], work: Path, **sections: dict[str, object]
) -> list[str]:
    async with running_service(calls={"max_calls": max(32, n)}, **sections) as server:
        callers = []
        for i in range(n):
            utt = utterances[i % len(utterances)]
            caller = f"bench{i:03d}-{uuid.uuid4().hex[:6]}"
            # Caller i listens to the welcome prompt for i/n of `listen` seconds, then talks over it.
            # Then silence, as a phone sends while the caller waits (until the IVR hangs up).
            audio = ulaw_file(utt, work, lead_s=round(listen * i / n, 2), tail_s=75.0)
            # A misheard caller goes through re-prompts before escalation: give the call time to end.
            scenario = sipp_scenario(work, caller, f'<exec rtp_stream="{audio},1,0"/>', timeout_ms=75000)
            callers.append((caller, utt, scenario))
        cpu0, wall0, (busy0, total0) = os.times(), time.monotonic(), _machine_busy()

        async def call(i: int, caller: str, scenario: Path) -> int:
            await asyncio.sleep(ramp * i / max(1, n))
            rc, _ = await sipp_call(scenario, server.sip_port, work, limit_s=90)
            return rc

        rcs = await asyncio.gather(*(call(i, c, s) for i, (c, _, s) in enumerate(callers)))
        cpu1, wall1, (busy1, total1) = os.times(), time.monotonic(), _machine_busy()
        intents = manifest()
        routed, latencies = 0, []
        for caller, utt, _ in callers:
            try:
                record = await server.record_of(caller, within=10)
            except AssertionError:
                print(f"  {utt}: no finished call record", file=sys.stderr)
                continue
            ok = record["outcome"] == {"route": intents[utt]["intent"]}
            routed += ok
            if not ok:
                heard = [t["transcript"] for t in record["turns"] if t["event"] == "utterance"]
                print(
                    f"  {utt} ({intents[utt]['intent']}): heard {heard}, outcome {record['outcome']}", file=sys.stderr
                )
            latencies += [t["latency_ms"] for t in record["turns"] if t["event"] == "utterance" and t["latency_ms"]]
        wall = wall1 - wall0
        server_cpu = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / wall
        machine = (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)
        return [
            str(n),
            f"{listen:g}",
            str(n),
            str(sum(rc == 0 for rc in rcs)),
            str(routed),
            f"{pct(latencies, 50):.0f}",
            f"{pct(latencies, 95):.0f}",
            f"{max(latencies, default=float('nan')):.0f}",
            f"{server_cpu:.2f}",
            f"{machine:.2f}",
            f"{wall:.1f}",
        ]


async def main() -> None:
    ap = sipp_bench_parser(__doc__)
    ap.add_argument("--calls", type=int, nargs="+", default=[1, 5, 10, 20], help="concurrent calls per round")
    ap.add_argument("--ramp", type=float, default=1.0, help="seconds over which a round's calls start")
    ap.add_argument(
        "--listen",
        type=float,
        nargs="+",
        default=[0.0, 10.0],
        help="callers start talking over the welcome prompt within this many seconds of the answer "
        "(0: all at once, the worst case for the recognizer); one round per value",
    )
    ap.add_argument("--no-redis", action="store_true", help="in-process dialog stores instead of Redis")
    args = ap.parse_args()
    if max(args.calls) > 50 or min(args.calls) < 1:
        ap.error("--calls: 1 to 50 per round")
    utterances = queue_utterances(manifest())
    rows = []
    with tempfile.TemporaryDirectory(prefix="voicenav-bench-") as tmp:
        for listen in args.listen:
            for n in args.calls:
                work = Path(tmp) / f"n{n}-l{listen:g}"
                work.mkdir()
                sections: dict[str, dict[str, object]] = {"recognizer": {"max_batch": args.max_batch}}
                if args.no_redis:
                    sections |= {"redis": {"url": None}}
                rows.append(await one_round(n, args.ramp, listen, utterances, work, **sections))
                print(f"round of {n} (listen {listen:g} s) done", file=sys.stderr, flush=True)
    headers = [
        "concurrent",
        "talk within s",
        "attempted",
        "completed",
        "routed ok",
        "latency p50 ms",
        "p95 ms",
        "max ms",
        "server CPU (cores)",
        "machine CPU (cores)",
        "wall s",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    asyncio.run(main())
