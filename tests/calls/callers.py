"""Real callers for the end-to-end tests and the bench: a running voicenav, sipp scenarios, the
callers_dev utterances as G.711, free ports, bounded subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from aiohttp import ClientSession, ClientTimeout, web

from asr_engine.audio.g711 import ulaw_encode
from asr_engine.audio.resample import resample_int16
from asr_engine.audio.wav import read_wav
from hotwords.auth import AdminAuth
from ivr.app.auth import HttpAuthParams
from ivr.app.config import AppConfig
from ivr.app.routes import build_app
from ivr.app.service import Service
from tests.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("VOICENAV_SHARED", ROOT.parent / "shared"))
CALLERS_DEV = SHARED / "data" / "callers_dev"
PEERS = Path(os.environ.get("PEERS_KIT", SHARED / "peers"))
WORK = Path(os.environ.get("PEERS_WORK", "/tmp/peers-work"))
PEERS_PY = WORK / "venv" / "bin" / "python"
REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL_CACHE = Path(os.environ.get("VOICENAV_TEST_CACHE", ROOT / ".cache" / "test-models"))
PROMPT_CACHE = ROOT / ".cache" / "test-prompts"
READER_TOKEN = uuid.uuid4().hex


def manifest() -> dict[str, dict[str, Any]]:
    rows = (json.loads(line) for line in (CALLERS_DEV / "manifest.jsonl").read_text().splitlines() if line)
    return {r["id"]: r for r in rows}


def ulaw_file(utterance: str, out_dir: Path, tail_s: float = 1.5, lead_s: float = 0.0) -> Path:
    """The utterance as raw μ-law at 8 kHz, after `lead_s` and before `tail_s` of silence, padded to
    whole 160-byte packets (sipp's rtp_stream sends raw payload and wraps at the end of the file)."""
    audio = read_wav(str(CALLERS_DEV / f"{utterance}.wav"))
    pcm = np.clip(np.asarray(audio.samples, dtype=np.float32) * 32768, -32768, 32767).astype(np.int16)
    if audio.sample_rate != 8000:
        pcm = resample_int16(pcm, audio.sample_rate, 8000)
    pcm = np.concatenate([np.zeros(int(lead_s * 8000), np.int16), pcm, np.zeros(int(tail_s * 8000), np.int16)])
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % 160, np.int16)])
    path = out_dir / f"{utterance}-{lead_s:g}.ulaw"
    path.write_bytes(ulaw_encode(pcm))
    return path


def wav_8k(utterance: str, out_dir: Path, lead_s: float = 0.0, tail_s: float = 1.5) -> Path:
    """The utterance as an 8 kHz mono 16-bit WAV with silence around it (baresip's aufile)."""
    return _wav(utterance, out_dir, 8000, lead_s, tail_s)


def wav_48k(utterance: str, out_dir: Path, lead_s: float = 1.5, tail_s: float = 1.5) -> Path:
    """48 kHz for Chromium's fake microphone (which starts ~0.5 s before media flows)."""
    return _wav(utterance, out_dir, 48000, lead_s, tail_s)


def _wav(utterance: str, out_dir: Path, rate: int, lead_s: float, tail_s: float) -> Path:
    import wave

    audio = read_wav(str(CALLERS_DEV / f"{utterance}.wav"))
    pcm = np.clip(np.asarray(audio.samples, dtype=np.float32) * 32768, -32768, 32767).astype(np.int16)
    pcm = resample_int16(pcm, audio.sample_rate, rate)
    pcm = np.concatenate([np.zeros(int(lead_s * rate), np.int16), pcm, np.zeros(int(tail_s * rate), np.int16)])
    path = out_dir / f"{utterance}-{rate}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


# -- the server ------------------------------------------------------------------------------------


@dataclass
class Running:
    service: Service
    http: str  # base URL
    sip_port: int
    prefix: str  # Redis keys of this server

    async def get(self, path: str) -> tuple[int, Any]:
        """GET with a `reader` token (call records, metrics)."""
        headers = {"Authorization": f"Bearer {READER_TOKEN}"}
        async with ClientSession(timeout=ClientTimeout(total=10)) as s, s.get(self.http + path, headers=headers) as r:
            body = await r.text()
            return r.status, (json.loads(body) if r.content_type == "application/json" else body)

    async def record_of(self, caller: str, within: float = 30.0) -> dict[str, Any]:
        """The finished call record of the call placed by `caller` (waits for it to be written); records
        show the caller masked, as the service does by default."""
        shown = self.service.config.dialog.records.present_caller(caller)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            status, body = await self.get("/v1/calls?limit=200")
            assert status == 200, body
            for call in body["calls"]:
                if shown in call["caller"] and call["outcome"] is not None:
                    return call
            if loop.time() > deadline:
                raise AssertionError(f"no finished call record for {caller}: {body}")
            await asyncio.sleep(0.2)

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`, from /metrics."""
        _, text = await self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample.split("{", 1)[0] == name and all(f'{k}="{v}"' in sample for k, v in labels.items()):
                total += float(value)
        return total


def service_config(prefix: str, **sections: dict[str, Any]) -> AppConfig:
    """The test service's settings; `sections` replace single settings: `calls={"max_calls": 2}`."""
    values: dict[str, dict[str, Any]] = {
        "sip": {"host": "127.0.0.1", "port": 0, "transports": ("udp",)},
        "http": {"host": "127.0.0.1", "port": 0},
        "rtp": {"port_min": None, "port_max": None},
        "redis": {"url": REDIS_URL},
        "dialog": {"key_prefix": f"{prefix}dialog:"},
        "hotwords": {"key_prefix": f"{prefix}hotwords"},
        "recognizer": {"engine": {"cache_dir": MODEL_CACHE}},
        "prompts": {"cache_dir": PROMPT_CACHE},
        "webrtc": {"host_addresses": ["127.0.0.1"]},
        "calls": {"drain_timeout_s": 30.0, "retry_after_s": 7},
    }
    for name, settings in sections.items():
        values[name] = {**values.get(name, {}), **settings}
    return AppConfig.model_validate(values)


@asynccontextmanager
async def running_service(
    load_timeout_s: float = 180.0,
    extra_routes: Callable[[web.Application], None] | None = None,
    public_paths: tuple[str, ...] = (),
    **sections: dict[str, Any],
) -> AsyncIterator[Running]:
    """voicenav in this process on ephemeral ports, Redis keys under a fresh prefix (deleted after);
    `extra_routes` adds a test's own endpoints to the app, open to all at `public_paths`."""
    prefix = f"voicenav-test:{uuid.uuid4().hex}:"
    service = Service(service_config(prefix, **sections))
    app = build_app(
        service,
        auth=AdminAuth({"tests": READER_TOKEN}, {"tests": ["reader"]}),
        http_auth=HttpAuthParams(public_paths=public_paths),
    )
    if extra_routes is not None:
        extra_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    try:
        await service.start_sip()
        await site.start()
        host, port = runner.addresses[0][:2]
        async with asyncio.timeout(load_timeout_s):
            while not service.ready.is_set():
                if service.load_error is not None:
                    raise service.load_error
                await asyncio.sleep(0.1)
        assert service.sip is not None
        yield Running(service, f"http://{host}:{port}", service.sip.bound_port, prefix)
    finally:
        await runner.cleanup()
        client = aioredis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


async def poll(check: Callable[[], Awaitable[bool]], within: float, interval: float = 0.1) -> None:
    """Wait until `check()` holds (an HTTP state has no event to wait on); TimeoutError after `within`."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(interval)


# -- subprocesses ----------------------------------------------------------------------------------


async def run_bounded(
    *argv: str | Path, limit_s: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run a peer with a hard time limit; returns (exit code, combined output)."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -9, out.decode(errors="replace")
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


SIPP_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="voicenav caller">
  <send retrans="500">
    <![CDATA[

      INVITE sip:ivr@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:ivr@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 96
      a=rtpmap:0 PCMU/8000
      a=rtpmap:96 telephone-event/8000
      a=fmtp:96 0-16
      a=ptime:20

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="503" optional="true" next="refused"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[

      ACK sip:ivr@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:ivr@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action>{media}</action></nop>
{ending}
  <label id="refused"/>
</scenario>
"""

# The IVR hangs up after routing: answer its BYE.
END_BYE = """  <recv request="BYE" timeout="{timeout_ms}"/>
  <send next="done">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"""

# The IVR transfers with REFER: accept, report success (sipfrag 200), answer its BYE.
END_REFER = (
    """  <recv request="REFER" timeout="{timeout_ms}">
    <action>
      <ereg regexp="{refer_to}" search_in="hdr" header="Refer-To:" check_it="true" assign_to="1"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 202 Accepted
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      NOTIFY sip:ivr@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:ivr@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 NOTIFY
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Event: refer
      Subscription-State: terminated;reason=noresource
      Content-Type: message/sipfrag
      Content-Length: [len]

      SIP/2.0 200 OK
    ]]>
  </send>
  <recv response="200"/>
"""
    + END_BYE
    + """  <Reference variables="1"/>
"""
)


# The caller hangs up first.
END_CALLER_BYE = """  <pause milliseconds="{hangup_after_ms}"/>
  <send retrans="500">
    <![CDATA[

      BYE sip:ivr@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:ivr@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" next="done"/>
"""


def sipp_scenario(
    out: Path,
    caller: str,
    media: str,
    *,
    refer_to: str | None = None,
    hangup_after_ms: int | None = None,
    timeout_ms: int = 40000,
) -> Path:
    """A UAC scenario: INVITE offering PCMU + telephone-event 96, then `media` (sipp exec actions),
    then the IVR's BYE (or REFER to `refer_to`, then BYE; or the caller's own BYE after
    `hangup_after_ms`). A 503 ends the scenario as a refusal."""
    template = END_CALLER_BYE if hangup_after_ms is not None else END_REFER if refer_to else END_BYE
    ending = template.format(caller=caller, refer_to=refer_to, timeout_ms=timeout_ms, hangup_after_ms=hangup_after_ms)
    text = SIPP_SCENARIO.format(caller=caller, media=media, ending=ending + '  <label id="done"/>\n')
    path = out / f"{caller}.xml"
    path.write_text(text)
    return path


async def sipp_call(
    scenario: Path, sip_port: int, cwd: Path, *, calls: int = 1, rate: float | None = None, limit_s: float = 60.0
) -> tuple[int, str]:
    """Run sipp against voicenav on 127.0.0.1:`sip_port`; returns (exit code, output)."""
    port = free_ports()
    media_port = free_ports(4)
    argv: list[str | Path] = [
        "sipp",
        f"127.0.0.1:{sip_port}",
        "-sf",
        scenario,
        "-m",
        str(calls),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(media_port),
        "-nostdin",
        "-timeout",
        f"{int(limit_s)}s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        cwd / f"{scenario.stem}-errors.log",
    ]
    if calls > 1:
        argv += ["-l", str(calls), "-r", str(rate or calls), "-rp", "1000"]
    return await run_bounded(*argv, limit_s=limit_s + 10, cwd=cwd)
