"""Soak: N sipp callers calling again and again for T minutes against one voicenav process, on loopback.

    .venv/bin/python -m bench.soak [--callers 30] [--minutes 10] [--interval 10] [--uploads 0]
                                   [--upload-seconds 120] [--no-redis]

voicenav runs in a child process (SIP and HTTP on free loopback ports, the tiny.en model from
.cache/test-models, Redis at 127.0.0.1:6379 under a throw-away key prefix unless --no-redis), so its
RSS and CPU are its own. Each of the N caller slots places one call after another until the time is
up, alternating a spoken request (the callers_dev utterances whose intent the demo flow routes at once,
in turn, over the welcome prompt) and a key press (1, 2, 3, 0: the demo flow's direct routes).
--uploads K adds K clients that post a long recording (Asterisk prompts joined to --upload-seconds) to
/v1/recognize one after another, as a batch job sharing the recognizer with the calls would (open
to all on this loopback service, so no token); uploads still in flight when the callers stop are
abandoned.

Every --interval seconds a row: calls served (call records finished), refused (503 to the INVITE)
and failed (sipp did not see the call through) in that interval, the server's per-turn latency from
the end of speech to the answering prompt (p50/p95/max, from the call records finished in that
interval), uploads answered 200 / refused 503, the service's CPU (cores) and RSS. At the end, a leak
verdict: the RSS trend after a warm-up (the first third of the run) by a least-squares line,
as growth over that window and per call served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
from aiohttp import ClientResponse, ClientSession, ClientTimeout

from asr_engine.audio.resample import resample_int16
from asr_engine.audio.wav import read_wav, wav_bytes

from .common import pct, queue_utterances, table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "calls"))  # the real-caller helpers the end-to-end tests use

from callers import READER_TOKEN, manifest, running_service, sipp_call, sipp_scenario, ulaw_file  # noqa: E402

ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
DTMF_KEYS = ("1", "2", "3", "0")  # the demo flow routes each at once
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- the service, in its own process -----------------------------------------------------------------


def _serve(conn: Connection, sections: dict[str, dict[str, object]], public_paths: tuple[str, ...]) -> None:
    async def serve() -> None:
        async with running_service(public_paths=public_paths, **sections) as server:
            conn.send((server.http, server.sip_port))
            await asyncio.to_thread(conn.recv)  # until the soak is over

    asyncio.run(serve())


def _cpu_rss(pid: int) -> tuple[float, float]:
    """(CPU seconds used so far, resident MB) of process `pid`."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / CLK_TCK  # utime, stime
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    return cpu, rss


# -- load --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # why sipp did not see each failed call through
    uploads_ok: int = 0
    uploads_refused: int = 0
    upload_errors: int = 0
    upload_seconds: list[float] = field(default_factory=list)


def _scenarios(work: Path) -> Iterator[Path]:
    """Call scenarios to cycle through: a spoken request, then a key press, by turns."""
    speech, keys = [], []
    for clip in queue_utterances(manifest()):
        audio = ulaw_file(clip, work, lead_s=1.0, tail_s=30.0)
        speech.append(sipp_scenario(work, f"soak-{clip}", f'<exec rtp_stream="{audio},1,0"/>', timeout_ms=60000))
    for key in DTMF_KEYS:
        keys.append(sipp_scenario(work, f"soak-key{key}", f'<exec play_dtmf="{key},120"/>', timeout_ms=60000))
    for n in count():
        yield speech[n % len(speech)] if n % 2 == 0 else keys[(n // 2) % len(keys)]


def long_recording(seconds: float) -> bytes:
    """Asterisk prompts one after another (8 kHz), as one WAV of at least `seconds`."""
    pieces, total = [], 0
    for path in sorted(ASTERISK_SOUNDS.glob("*.wav")):
        audio = read_wav(str(path))
        pcm = np.clip(np.asarray(audio.samples, np.float32) * 32768, -32768, 32767).astype(np.int16)
        if audio.sample_rate != 8000:
            pcm = resample_int16(pcm, audio.sample_rate, 8000)
        pieces.append(pcm)
        total += len(pcm)
        if total >= seconds * 8000:
            break
    return wav_bytes(np.concatenate(pieces), 8000)


async def caller(sip_port: int, work: Path, scenarios: Iterator[Path], until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        scenario = next(scenarios)
        rc, out = await sipp_call(scenario, sip_port, work, limit_s=75)
        if rc != 0:
            tally.failed += 1
            errors = work / f"{scenario.stem}-errors.log"
            said = (errors.read_text(errors="replace") if errors.exists() else "") + out
            last = [line for line in said.splitlines() if line.strip()][-3:]
            tally.failures.append(f"{scenario.stem}: sipp exit {rc}: {' | '.join(last)}")


async def uploader(http: str, body: bytes, until: float, tally: Tally) -> None:
    async with ClientSession(timeout=ClientTimeout(total=600)) as s:
        while time.monotonic() < until:
            started = time.monotonic()
            async with s.post(http + "/v1/recognize", data=body, headers={"Content-Type": "audio/wav"}) as r:
                await r.read()
                status, retry = r.status, float(r.headers.get("Retry-After", "1"))
            if status == 200:
                tally.uploads_ok += 1
                tally.upload_seconds.append(time.monotonic() - started)
            elif status == 503:
                tally.uploads_refused += 1
                await asyncio.sleep(min(retry, max(0.0, until - time.monotonic())))
            else:
                tally.upload_errors += 1
                await asyncio.sleep(1)


async def _get(http: str, path: str) -> ClientResponse:
    headers = {"Authorization": f"Bearer {READER_TOKEN}"}
    async with ClientSession(timeout=ClientTimeout(total=30)) as s, s.get(http + path, headers=headers) as r:
        await r.read()
        return r


async def finished_calls(http: str, seen: set[str]) -> tuple[int, list[float]]:
    """How many call records finished since the last look, and their turn latencies (ms)."""
    resp = await _get(http, "/v1/calls?limit=200")
    body = await resp.json()
    if resp.status != 200:
        # The records are still there: the next look counts them (a 503 while Redis is away, a 429).
        print(f"GET /v1/calls answered {resp.status}: {body}", file=sys.stderr)
        return 0, []
    calls, out = 0, []
    for call in body["calls"]:
        if call["outcome"] is None or call["call_id"] in seen:
            continue
        seen.add(call["call_id"])
        calls += 1
        out += [t["latency_ms"] for t in call["turns"] if t["event"] == "utterance" and t["latency_ms"]]
    return calls, out


async def sip_refused(http: str) -> int:
    """INVITEs the service refused so far (over capacity, over the source's rate), from /metrics."""
    text = await (await _get(http, "/metrics")).text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("voicenav_sip_admission_refused_total{", "voicenav_sip_rejected_calls_total{")):
            total += float(line.rpartition(" ")[2])
    return int(total)


# -- the run -----------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    served: int  # call records finished
    refused: int  # INVITEs answered 503 (capacity, source rate)
    failed: int  # sipp runs that did not end as the scenario expects
    latencies: list[float]
    uploads_ok: int
    uploads_refused: int
    cpu_cores: float
    rss_mb: float


async def soak(args: argparse.Namespace, http: str, sip_port: int, pid: int, work: Path) -> list[Sample]:
    scenarios = _scenarios(work)
    tally = Tally()
    seen: set[str] = set()
    await finished_calls(http, seen)  # nothing before the soak counts
    refused0 = await sip_refused(http)
    start = time.monotonic()
    until = start + args.minutes * 60
    tasks = [asyncio.create_task(caller(sip_port, work, scenarios, until, tally)) for _ in range(args.callers)]
    uploads = []
    if args.uploads:
        body = long_recording(args.upload_seconds)
        uploads = [asyncio.create_task(uploader(http, body, until, tally)) for _ in range(args.uploads)]
    samples: list[Sample] = []
    cpu0, _ = _cpu_rss(pid)
    last = (refused0, 0, 0, 0, cpu0, start)
    while not all(t.done() for t in tasks):
        await asyncio.sleep(max(0.0, start + (len(samples) + 1) * args.interval - time.monotonic()))
        now, (cpu, rss) = time.monotonic(), _cpu_rss(pid)
        served, latencies = await finished_calls(http, seen)
        counts = (await sip_refused(http), tally.failed, tally.uploads_ok, tally.uploads_refused)
        sample = Sample(
            now - start,
            served,
            counts[0] - last[0],
            counts[1] - last[1],
            latencies,
            counts[2] - last[2],
            counts[3] - last[3],
            (cpu - last[4]) / (now - last[5]),
            rss,
        )
        samples.append(sample)
        last = (*counts, cpu, now)
        print(
            f"t={sample.t:.0f}s served={sample.served} refused={sample.refused} failed={sample.failed} "
            f"p50={pct(latencies, 50):.0f}ms p95={pct(latencies, 95):.0f}ms cpu={sample.cpu_cores:.2f} "
            f"rss={rss:.0f}MB",
            file=sys.stderr,
            flush=True,
        )
    await asyncio.gather(*tasks)
    # Uploads only matter while calls are placed: the ones still in flight are abandoned.
    for task in uploads:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if tally.upload_errors:
        print(f"{tally.upload_errors} uploads answered neither 200 nor 503", file=sys.stderr)
    for failure in tally.failures:
        print(f"failed call: {failure}", file=sys.stderr)
    return samples


def report(samples: list[Sample], warmup_fraction: float, leak_pct: float) -> str:
    rows = [
        [
            f"{s.t:.0f}",
            s.served,
            s.refused,
            s.failed,
            f"{pct(s.latencies, 50):.0f}",
            f"{pct(s.latencies, 95):.0f}",
            f"{max(s.latencies, default=float('nan')):.0f}",
            f"{s.uploads_ok}/{s.uploads_refused}",
            f"{s.cpu_cores:.2f}",
            f"{s.rss_mb:.0f}",
        ]
        for s in samples
    ]
    every = [x for s in samples for x in s.latencies]
    rows.append(
        [
            "all",
            sum(s.served for s in samples),
            sum(s.refused for s in samples),
            sum(s.failed for s in samples),
            f"{pct(every, 50):.0f}",
            f"{pct(every, 95):.0f}",
            f"{max(every, default=float('nan')):.0f}",
            f"{sum(s.uploads_ok for s in samples)}/{sum(s.uploads_refused for s in samples)}",
            f"{np.mean([s.cpu_cores for s in samples]):.2f}",
            f"{samples[-1].rss_mb:.0f}",
        ]
    )
    headers = [
        "t s",
        "served",
        "refused",
        "failed",
        "turn p50 ms",
        "p95 ms",
        "max ms",
        "uploads ok/503",
        "CPU cores",
        "RSS MB",
    ]
    out = [table(headers, rows)]
    total = samples[-1].t
    tail = [s for s in samples if s.t >= total * warmup_fraction]
    if len(tail) < 3:
        return "\n".join([*out, "leak verdict: too few samples after the warm-up"])
    t = np.array([s.t for s in tail])
    rss = np.array([s.rss_mb for s in tail])
    slope, intercept = np.polyfit(t, rss, 1)  # MB per second
    start_mb = intercept + slope * t[0]
    growth = slope * (t[-1] - t[0]) / start_mb * 100
    calls = sum(s.served for s in tail[1:])
    per_call = f"{slope * (t[-1] - t[0]) * 1024 / calls:.1f} KB per call" if calls else "no calls"
    verdict = "levels off" if growth < leak_pct else "STILL GROWING"
    out.append(
        f"leak verdict: RSS {verdict}: {growth:+.1f}% over the last {t[-1] - t[0]:.0f} s after a warm-up of "
        f"{tail[0].t:.0f} s ({slope * 60:+.2f} MB/min, {per_call}; threshold {leak_pct:g}%)"
    )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--callers", type=int, default=30, help="concurrent caller slots (1-60)")
    ap.add_argument("--minutes", type=float, default=10.0, help="how long callers keep calling (0.5-60)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--uploads", type=int, default=0, help="clients posting long recordings to /v1/recognize (0-8)")
    ap.add_argument("--upload-seconds", type=float, default=120.0, help="length of the posted recording")
    ap.add_argument("--warmup", type=float, default=1 / 3, help="fraction of the run the leak verdict ignores")
    ap.add_argument("--leak-pct", type=float, default=5.0, help="RSS growth after the warm-up that counts as a leak")
    ap.add_argument("--no-redis", action="store_true", help="in-process dialog stores instead of Redis")
    args = ap.parse_args()
    if not 1 <= args.callers <= 60:
        ap.error("--callers: 1 to 60")
    if not 0.5 <= args.minutes <= 60:
        ap.error("--minutes: 0.5 to 60")
    if not 0 <= args.uploads <= 8:
        ap.error("--uploads: 0 to 8")
    sections: dict[str, dict[str, object]] = {
        "calls": {"max_calls": max(32, args.callers)},
        # Every caller comes from 127.0.0.1: the per-source INVITE rate is for the real world.
        "sip": {"access": {"invite_rate": {"rate_per_s": 50.0, "burst": 100}}},
    }
    if args.no_redis:
        sections |= {"redis": {"url": None}}
    # The open path spares the bench a recognize token; everything is on 127.0.0.1.
    public = ("/v1/recognize",) if args.uploads else ()
    # Forked before any event loop runs here: the child starts its own.
    ours, theirs = multiprocessing.get_context("fork").Pipe()
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(theirs, sections, public), daemon=True)
    server.start()
    try:
        if not ours.poll(300):
            raise SystemExit("the service did not come up within 300 s")
        http, sip_port = ours.recv()
        assert server.pid is not None
        with tempfile.TemporaryDirectory(prefix="voicenav-soak-") as tmp:
            samples = asyncio.run(soak(args, http, sip_port, server.pid, Path(tmp)))
    finally:
        ours.send("stop")
        server.join(60)
        if server.is_alive():
            server.terminate()
    print(
        f"soak: {args.callers} callers, {args.minutes:g} min, {args.uploads} uploaders of "
        f"{args.upload_seconds:g} s recordings, sampled every {args.interval:g} s"
    )
    print(report(samples, args.warmup, args.leak_pct))


if __name__ == "__main__":
    main()
