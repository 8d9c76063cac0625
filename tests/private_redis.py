"""A redis-server of a test's own, on a free port in a temp dir, that the test may stop and restart
(the shared server on 6379 is never touched). No persistence: a restart comes back empty, like a
Redis that lost its data."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.ports import TCP, free_ports
from tests.processes import stop_process


class _ServerProcess(ABC):
    """A redis-server process of a test's own on a free port: spawned, awaited until ready, stopped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_ports(1, (TCP,))
        self._proc: asyncio.subprocess.Process | None = None

    @abstractmethod
    async def _ready(self, client: aioredis.Redis) -> bool:
        """Whether the server, asked through `client`, is of use yet."""

    async def _spawn(self, *args: str) -> None:
        """Run `redis-server *args` and wait (10 s at most) until it is ready."""
        assert self._proc is None, "already running"
        self._proc = await asyncio.create_subprocess_exec(
            "redis-server", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        async with _client(self.port) as client, asyncio.timeout(10):
            while True:
                with contextlib.suppress(OSError, RedisConnectionError):  # not listening yet
                    if await self._ready(client):
                        return
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._proc is not None:
            await stop_process(self._proc, 10)
        self._proc = None


class PrivateRedis(_ServerProcess):
    """`replica_of`: start as a replica of that server (for Sentinel to promote)."""

    def __init__(self, workdir: Path, replica_of: PrivateRedis | None = None) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        super().__init__(workdir)
        self.replica_of = replica_of

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        replica = ["--replicaof", "127.0.0.1", str(self.replica_of.port)] if self.replica_of is not None else []
        await self._spawn(
            "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"), *replica,
        )  # fmt: skip

    async def _ready(self, client: aioredis.Redis) -> bool:
        await client.ping()
        # a replica is of use once it has the primary's data and follows it
        return self.replica_of is None or (await client.info("replication"))["master_link_status"] == "up"

    async def restart(self, down_s: float = 0.0) -> None:
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()


class PrivateSentinel(_ServerProcess):
    """A Redis Sentinel of a test's own (`redis-server --sentinel`) watching `primary` as `master`, alone
    (quorum 1). It calls the primary down after `down_after_ms` without an answer and then promotes a
    replica; it waits for the primary's replicas to be known before `start` returns."""

    def __init__(
        self, workdir: Path, primary: PrivateRedis, master: str = "voicenav-test", down_after_ms: int = 30000
    ) -> None:
        super().__init__(workdir)
        self.primary = primary
        self.master = master
        self.down_after_ms = down_after_ms

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        conf = self.workdir / "sentinel.conf"  # Sentinel rewrites its config file: one of its own
        conf.write_text(
            f"bind 127.0.0.1\nport {self.port}\ndir {self.workdir}\nlogfile {self.workdir / 'sentinel.log'}\n"
            f"sentinel monitor {self.master} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.master} {self.down_after_ms}\n"
        )
        await self._spawn(str(conf), "--sentinel")

    async def _ready(self, client: aioredis.Redis) -> bool:
        named = await client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)
        return bool(named) and await self._replicas_known(client)

    async def _replicas_known(self, client: aioredis.Redis) -> bool:
        """Whether Sentinel has found every replica of the primary that is running (from its INFO)."""
        async with _client(self.primary.port) as primary:
            expected = int((await primary.info("replication"))["connected_slaves"])
        return len(await client.execute_command("SENTINEL", "REPLICAS", self.master)) >= expected

    async def primary_port(self) -> int:
        """The port of the primary this Sentinel names now."""
        async with _client(self.port) as client:
            _, port = await client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)
        return int(port)


@asynccontextmanager
async def _client(port: int) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()
