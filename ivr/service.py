"""The running service's shared parts: recognizer, VAD, readiness and draining."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Gauge

from asr_engine.batcher import BatchingRecognizer
from asr_engine.recognizer import Recognizer
from asr_engine.vad import SileroVad

from .config import ServiceConfig

log = logging.getLogger(__name__)

DRAINING = Gauge("voicenav_draining", "1 while the instance drains calls before shutting down")
ACTIVE_CALLS = Gauge("voicenav_active_calls", "Calls in progress", ["transport"])


class Service:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.recognizer: Recognizer | None = None
        self.batcher: BatchingRecognizer | None = None
        self.vad: SileroVad | None = None
        self.ready = asyncio.Event()
        self.load_error: BaseException | None = None
        self.draining = False
        self.calls_idle = asyncio.Event()
        self.calls_idle.set()
        self._calls = 0
        DRAINING.set(0)

    async def load(self) -> None:
        """Load (and on first use convert) the model off the event loop."""
        try:
            rc = self.config.recognizer()
            self.recognizer = await asyncio.to_thread(Recognizer, rc, lambda msg: log.info("%s", msg))
            self.vad = await asyncio.to_thread(SileroVad)
            self.batcher = BatchingRecognizer(self.recognizer, rc.max_batch, rc.max_wait_ms, rc.queue_size)
            self.ready.set()
            log.info("recognizer ready: model %s on %s", rc.model, self.recognizer.engine.name)
        except Exception as exc:
            self.load_error = exc
            log.exception("recognizer failed to load")
            raise

    def call_started(self, transport: str) -> None:
        self._calls += 1
        self.calls_idle.clear()
        ACTIVE_CALLS.labels(transport).inc()

    def call_ended(self, transport: str) -> None:
        self._calls -= 1
        ACTIVE_CALLS.labels(transport).dec()
        if self._calls == 0:
            self.calls_idle.set()

    @property
    def active_calls(self) -> int:
        return self._calls

    def accepting(self) -> bool:
        return self.ready.is_set() and not self.draining and self._calls < self.config.max_calls

    async def drain(self) -> None:
        """Refuse new calls and wait for the active ones, up to the drain timeout."""
        self.draining = True
        DRAINING.set(1)
        log.info("draining: %d active calls, waiting up to %.0f s", self._calls, self.config.drain_timeout_s)
        try:
            await asyncio.wait_for(self.calls_idle.wait(), self.config.drain_timeout_s)
        except TimeoutError:
            log.warning("drain timeout with %d calls still active", self._calls)

    def close(self) -> None:
        if self.batcher:
            self.batcher.close()
