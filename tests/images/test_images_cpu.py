"""The CPU image run as a Kubernetes pod runs it: read-only root, a tmpfs for /tmp, uid 10001, no
capabilities, no privilege escalation. It becomes ready, transcribes a WAV over HTTP, takes a real
sipp call and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dialog.redact import mask_caller
from tests.calls.callers import CALLERS_DEV, manifest, sipp_call, sipp_scenario, ulaw_file
from tests.images.conftest import podman
from tests.ports import TCP, UDP, free_ports

pytestmark = [pytest.mark.timeout(900), pytest.mark.peers]

READY_WITHIN_S = 120.0
STOP_TIMEOUT_S = 30
TOKEN = "image-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with session.get(url, headers=headers) as r:
        return r.status, await r.json(content_type=None)


def _rss_mb(pid: int) -> float:
    """Resident memory of the container's processes (tini and the server under it), from /proc."""
    total = 0
    pids = [pid, *(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


async def test_cpu_image_runs_as_a_restricted_pod(cpu_image: str, measurements: dict, tmp_path: Path) -> None:
    http_port = free_ports(1, (TCP,))
    sip_port = free_ports(1, (UDP, TCP))
    rtp_min = free_ports(16)
    name = f"voicenav-test-{uuid.uuid4().hex[:8]}"
    env = {
        "VOICENAV_HTTP__HOST": "127.0.0.1",
        "VOICENAV_HTTP__PORT": http_port,
        "VOICENAV_SIP__HOST": "127.0.0.1",
        "VOICENAV_SIP__PORT": sip_port,
        "VOICENAV_RTP__PORT_MIN": rtp_min,
        "VOICENAV_RTP__PORT_MAX": rtp_min + 15,
        # The image's cache directory is read-only here, as the root filesystem is: prompts go to /tmp.
        "VOICENAV_PROMPTS__CACHE_DIR": "/tmp/prompts",
        "VOICENAV_CALLS__DRAIN_TIMEOUT_S": 10,
    }
    # The API tokens come as a mounted secret, as in Kubernetes.
    tokens = tmp_path / "tokens"
    tokens.write_text(f"image-test:recognize,reader:{TOKEN}\n", encoding="utf-8")
    tokens.chmod(0o644)  # the container runs as uid 10001
    env["VOICENAV_AUTH__TOKEN_FILE"] = "/run/secrets/voicenav/tokens"
    env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    env_args += ["-v", f"{tokens}:/run/secrets/voicenav/tokens:ro"]
    t0 = time.monotonic()
    podman(
        "create", "--name", name, "--read-only", "--tmpfs", "/tmp", "--user", "10001", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--network", "host", *env_args, cpu_image,
    )  # fmt: skip
    # Creating the container depends on the storage driver (vfs copies the image); the pod's cold start
    # is from the process starting to /readyz answering 200.
    measurements["cpu_create_s"] = round(time.monotonic() - t0, 1)
    started = time.monotonic()
    podman("start", name)
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            while True:
                try:
                    status, body = await _get(http, base + "/readyz")
                    if status == 200:
                        break
                    assert body["status"] == "loading", body
                except aiohttp.ClientConnectionError:
                    pass
                running = podman("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
                assert running == "true", podman("logs", name).stderr[-3000:]
                assert time.monotonic() - started < READY_WITHIN_S, "not ready in time"
                await asyncio.sleep(0.2)
            measurements["cpu_cold_start_to_ready_s"] = round(time.monotonic() - started, 1)

            # The same recording as the offline tests: /v1/recognize with no hot words.
            utterance = "dev031"
            wav = (CALLERS_DEV / f"{utterance}.wav").read_bytes()
            async with http.post(base + "/v1/recognize", data=wav, headers=AUTH) as r:
                assert r.status == 200, await r.text()
                text = (await r.json())["text"]
            assert text.lower().strip(" .") == manifest()[utterance]["text"].lower()

            # A real SIP call into the container: speech routes to the intent's queue.
            caller = f"image-{uuid.uuid4().hex[:8]}"
            scenario = sipp_scenario(tmp_path, caller, f'<exec rtp_stream="{ulaw_file(utterance, tmp_path)},1,0"/>')
            rc, out = await sipp_call(scenario, sip_port, tmp_path, limit_s=60)
            assert rc == 0, out
            status, body = await _get(http, base + "/v1/calls?limit=20", AUTH)
            (record,) = [c for c in body["calls"] if c["caller"] == mask_caller(caller)]
            assert record["outcome"] == {"route": manifest()[utterance]["intent"]}, record

            await asyncio.sleep(2)  # idle: the call's buffers released
            pid = int(podman("inspect", "-f", "{{.State.Pid}}", name).stdout)
            measurements["cpu_idle_rss_mb"] = round(_rss_mb(pid))

        t0 = time.monotonic()
        podman("stop", "-t", str(STOP_TIMEOUT_S), name, timeout=STOP_TIMEOUT_S + 30)
        measurements["cpu_stop_s"] = round(time.monotonic() - t0, 1)
        state = podman("inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", name).stdout.split()
        logs = podman("logs", name).stderr
        # SIGTERM drained and exited 0 well before podman would have sent SIGKILL.
        assert state == ["0", "false"], logs[-3000:]
        assert measurements["cpu_stop_s"] < STOP_TIMEOUT_S
        assert "Traceback" not in logs, logs[-3000:]
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
