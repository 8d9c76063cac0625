"""A redis-server of a test's own, on a free port in a temp dir, that the test may stop and restart
(the shared server on 6379 is never touched). No persistence: a restart comes back empty, like a
Redis that lost its data."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.ports import TCP, free_ports


class PrivateRedis:
    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.workdir = workdir
        self.port = free_ports(1, (TCP,))
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        assert self._proc is None, "already running"
        self._proc = await asyncio.create_subprocess_exec(
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = aioredis.Redis(host="127.0.0.1", port=self.port)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        await client.ping()
                        return
                    except (OSError, RedisConnectionError):
                        await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self._proc is not None:
            await _terminate(self._proc)
        self._proc = None

    async def restart(self, down_s: float = 0.0) -> None:
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()


class PrivateSentinel:
    """A Redis Sentinel of a test's own (`redis-server --sentinel`) watching `primary` as `master`."""

    def __init__(self, workdir: Path, primary: PrivateRedis, master: str = "voicenav-test") -> None:
        self.workdir = workdir
        self.primary = primary
        self.master = master
        self.port = free_ports(1, (TCP,))
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self._proc is None, "already running"
        conf = self.workdir / "sentinel.conf"  # Sentinel rewrites its config file: one of its own
        conf.write_text(
            f"bind 127.0.0.1\nport {self.port}\ndir {self.workdir}\nlogfile {self.workdir / 'sentinel.log'}\n"
            f"sentinel monitor {self.master} 127.0.0.1 {self.primary.port} 1\n"
        )
        self._proc = await asyncio.create_subprocess_exec(
            "redis-server",
            str(conf),
            "--sentinel",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = aioredis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        if await client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master):
                            return
                    except (OSError, RedisConnectionError):
                        pass
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self._proc is not None:
            await _terminate(self._proc)
        self._proc = None


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, and SIGKILL if the server has not exited within 10 s."""
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
