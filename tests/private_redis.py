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
    """`replica_of`: start as a replica of that server (for Sentinel to promote)."""

    def __init__(self, workdir: Path, replica_of: PrivateRedis | None = None) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.workdir = workdir
        self.replica_of = replica_of
        self.port = free_ports(1, (TCP,))
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        assert self._proc is None, "already running"
        replica = ["--replicaof", "127.0.0.1", str(self.replica_of.port)] if self.replica_of is not None else []
        self._proc = await asyncio.create_subprocess_exec(
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"), *replica,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = aioredis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        await client.ping()
                        # a replica is of use once it has the primary's data and follows it
                        if not replica or (await client.info("replication"))["master_link_status"] == "up":
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

    async def restart(self, down_s: float = 0.0) -> None:
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()


class PrivateSentinel:
    """A Redis Sentinel of a test's own (`redis-server --sentinel`) watching `primary` as `master`, alone
    (quorum 1). It calls the primary down after `down_after_ms` without an answer and then promotes a
    replica; it waits for the primary's replicas to be known before `start` returns."""

    def __init__(
        self, workdir: Path, primary: PrivateRedis, master: str = "voicenav-test", down_after_ms: int = 30000
    ) -> None:
        self.workdir = workdir
        self.primary = primary
        self.master = master
        self.down_after_ms = down_after_ms
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
            f"sentinel down-after-milliseconds {self.master} {self.down_after_ms}\n"
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
                        named = await client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)
                        if named and await self._replicas_known(client):
                            return
                    except (OSError, RedisConnectionError):
                        pass
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def _replicas_known(self, client: aioredis.Redis) -> bool:
        """Whether Sentinel has found every replica of the primary that is running (from its INFO)."""
        primary = aioredis.Redis(host="127.0.0.1", port=self.primary.port, decode_responses=True)
        try:
            expected = int((await primary.info("replication"))["connected_slaves"])
        finally:
            await primary.aclose()
        return len(await client.execute_command("SENTINEL", "REPLICAS", self.master)) >= expected

    async def primary_port(self) -> int:
        """The port of the primary this Sentinel names now."""
        client = aioredis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        try:
            _, port = await client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)
        finally:
            await client.aclose()
        return int(port)

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
