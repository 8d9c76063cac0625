"""baresip, a real SIP softphone, as a caller for the tests: its config directory and a running dial."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.ports import TCP, UDP, free_ports
from tests.processes import stop_process

MODULE_DIRS = (
    "/usr/lib/baresip/modules",
    "/usr/lib/x86_64-linux-gnu/baresip/modules",
    "/usr/lib/aarch64-linux-gnu/baresip/modules",
    "/usr/local/lib/baresip/modules",
)

# Adapted from the peers kit's baresip/cfg/config.template: every port is chosen per test run, so the
# fixed 5062/4444/30000-30100 of the kit are never used and parallel runs do not collide.
CONFIG = """poll_method epoll
net_interface 127.0.0.1
sip_listen 127.0.0.1:{sip_port}
call_local_timeout 20
call_max_calls 1
audio_buffer 20
audio_player alsa,null
audio_alert alsa,null
audio_source aufile,{wav}
ausrc_format s16
auplay_format s16
rtp_ports {rtp_lo}-{rtp_hi}
jitter_buffer_delay 1-10
rtcp_mux no
module_path {module_path}
module g711.so
module aufile.so
module alsa.so
{recording}module_tmp account.so
module_app menu.so
"""
# sndfile records what baresip hears (dump-*-dec.wav) into snd_path.
RECORDING = "snd_path {out}\nmodule sndfile.so\n"


def write_config(cfg_dir: Path, wav: Path, account: str, record_to: Path | None = None) -> None:
    """baresip's config directory: it plays `wav` as its microphone; `account` is its accounts line."""
    module_path = next((d for d in MODULE_DIRS if Path(d, "g711.so").exists()), MODULE_DIRS[0])
    rtp = free_ports(8, (UDP, TCP))
    recording = "" if record_to is None else RECORDING.format(out=record_to)
    cfg_dir.mkdir()
    (cfg_dir / "config").write_text(
        CONFIG.format(
            sip_port=free_ports(1, (UDP, TCP)),
            wav=wav,
            rtp_lo=rtp,
            rtp_hi=rtp + 7,
            module_path=module_path,
            recording=recording,
        )
    )
    (cfg_dir / "accounts").write_text(account + "\n")
    (cfg_dir / "contacts").write_text("")


@asynccontextmanager
async def dialing(cfg_dir: Path, uri: str, seconds: int, log_path: Path) -> AsyncIterator[None]:
    """baresip dials `uri` and quits after `seconds`; it is stopped on leaving if still running."""
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            "baresip",
            "-f",
            str(cfg_dir),
            "-e",
            f"/dial {uri}",
            "-t",
            str(seconds),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            yield
        finally:
            await stop_process(proc, 5)
