"""The running service: recognizer, VAD, dialog stores, prompts, hot words, the SIP and WebRTC front
ends sharing one admission, readiness and draining."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from functools import partial

import numpy as np

from asr_engine.audio.resample import resample
from asr_engine.batcher import BatchingRecognizer
from asr_engine.decoding.vocabulary import Combined, Vocabulary
from asr_engine.recognizer import Recognizer, Utterance
from asr_engine.streaming import RecognitionStream
from asr_engine.vad import RATE, SileroVad
from asr_engine.vad_batch import VadBatcher
from dialog import actions as act
from dialog import events as ev
from dialog.context import ContextStore, open_context_store
from dialog.durable import DialogStores, open_dialog_stores
from dialog.flow import Flow, load_demo_flow, load_flow
from dialog.policy import DialogPolicy
from dialog.records import RecordStore, open_record_store
from dialog.sealing import open_sealer
from hotwords.registry import HotwordRegistry
from hotwords.schema import validate_scope
from hotwords.store import HotwordStore, open_store
from ivr.app.biasing import Biasing, grammar_vocabulary
from ivr.app.config import AppConfig
from ivr.app.deletion_cost import DeletionCostUpdater
from ivr.app.redis import RedisConnector, open_redis
from ivr.calls.admission import Admission
from ivr.calls.prompt_cache import PromptCache
from ivr.calls.prompts import PromptRenderer
from ivr.calls.session import APOLOGY, CallDeps, HotwordContext
from ivr.sip import SipServer
from ivr.sip.call import IncomingCall
from ivr.sip.handler import SipCallHandler
from ivr.webrtc.endpoint import CallInfo, WebRtcEndpoint
from ivr.webrtc.handler import WebRtcCallHandler
from ivr.webrtc.leg import WebRtcLeg

log = logging.getLogger(__name__)


class Service:
    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.recognizer: Recognizer | None = None
        self.batcher: BatchingRecognizer | None = None
        self.vad: SileroVad | None = None
        self.vad_batcher: VadBatcher | None = None  # all calls' VAD, in one thread
        self.flow: Flow | None = None
        self.deps: CallDeps | None = None
        self.hotwords: HotwordRegistry | None = None
        hw = config.hotwords
        self.redis: RedisConnector | None = open_redis(config.redis)
        connect = self.redis.connect if self.redis is not None else None
        self.hotword_store: HotwordStore = open_store(connect, hw.key_prefix, hw.audit_cap)
        self._hotword_scopes: tuple[str, ...] = ()
        self._vocabularies: dict[str, Vocabulary | None] = {}  # by grammar, built on first use
        self.ready = asyncio.Event()
        self.load_error: BaseException | None = None
        # closed until the model and the flow are loaded
        self.admission = Admission(config.calls.max_calls, config.calls.retry_after_s, loading=True)
        self.deletion_cost: DeletionCostUpdater | None = None
        if config.pod_deletion_cost.enabled:
            self.deletion_cost = DeletionCostUpdater(config.pod_deletion_cost, self.admission.active)
        dialog = config.dialog
        if connect is None:
            log.warning(
                "no Redis configured: dialog context, call records and hot-word lists live in this process only"
            )
        sealer = open_sealer(dialog.sealing)
        # With Redis, calls keep their state here and write it through; `dialog_stores.healthy` says
        # whether Redis is taking the writes (readiness reports it as degraded, calls go on).
        self.dialog_stores: DialogStores | None = None
        self.contexts: ContextStore
        self.records: RecordStore
        if connect is not None:
            self.dialog_stores = open_dialog_stores(connect, prefix=dialog.key_prefix, sealer=sealer)
            self.contexts, self.records = self.dialog_stores.contexts, self.dialog_stores.records
        else:
            self.contexts = open_context_store(None)
            self.records = open_record_store(None)
        self._sip_handler: SipCallHandler | None = None
        self._webrtc_handler: WebRtcCallHandler | None = None
        self.sip: SipServer | None = None
        self.webrtc = WebRtcEndpoint.from_config(
            self._on_webrtc_call,
            config.webrtc,
            self.admission,
        )

    # -- startup -----------------------------------------------------------------------------------
    async def load(self) -> None:
        """Load (and on first use convert) the model, the flow and its prompts, off the event loop."""
        try:
            cfg = self.config
            rc = cfg.recognizer
            self.recognizer = await asyncio.to_thread(Recognizer, rc, lambda msg: log.info("%s", msg))
            await asyncio.to_thread(self.recognizer.warmup)
            self.vad = await asyncio.to_thread(SileroVad)
            self.vad_batcher = VadBatcher(self.vad)
            self.batcher = BatchingRecognizer(
                self.recognizer,
                rc.max_batch,
                rc.max_wait_ms,
                rc.queue_size,
                upload_queue_size=rc.upload_queue_size,
                worker_timeout_s=rc.worker_timeout_s,
            )
            flow_path = cfg.dialog.flow
            self.flow = await asyncio.to_thread(load_flow, flow_path) if flow_path else load_demo_flow()
            renderer = PromptRenderer(cfg.prompts)
            prompts = PromptCache(renderer, flow_path.parent if flow_path else None)
            ready = await prompts.warm(self.flow, (APOLOGY,))
            log.info("flow %s: %d prompts ready", self.flow.id, ready)
            await self._start_hotwords()
            self.deps = CallDeps(
                policy=DialogPolicy(self.flow),
                contexts=self.contexts,
                records=self.records,
                prompts=prompts,
                recognizer=self.batcher,
                speech_stream=partial(RecognitionStream, self.vad, cfg.vad),
                vad=self.vad_batcher,
                hotwords_for=self._hotwords_for,
                apology_transfer=cfg.calls.apology_transfer_uri,
            )
            local_ip = cfg.sip.public_host or cfg.sip.host
            present_caller = cfg.dialog.records.present_caller
            self._sip_handler = SipCallHandler(
                self.deps, cfg.rtp, local_ip, queue_uris=cfg.calls.queue_uris, present_caller=present_caller
            )
            self._webrtc_handler = WebRtcCallHandler(self.deps, present_caller)
            await self._warm_turns(prompts)
            self.ready.set()
            self.admission.open()
            log.info("ready for calls: model %s on %s", rc.model_name(), self.recognizer.engine.name)
        except Exception as exc:
            self.load_error = exc
            log.exception("service failed to load")
            raise

    async def _warm_turns(self, prompts: PromptCache) -> None:
        """Decode speech of every length a first turn is likely to have (the encoder's input shapes
        come in 1 s steps), with the opening node's hot words, so the first callers' answers are not
        slowed by one-time set-up in the inference engine."""
        assert self.deps is not None and self.batcher is not None
        policy = self.deps.policy
        opening = policy.decide(policy.new_context("warm-up"), ev.CallStarted()).actions
        listen = next((a for a in opening if isinstance(a, act.Listen)), None)
        plays = [a for a in opening if isinstance(a, act.Play)]
        if not plays:
            return
        prompt = await prompts.get(plays[0])
        speech = await asyncio.to_thread(resample, prompt.pcm.astype(np.float32) / 32768, prompt.sample_rate, RATE)
        context = await self._hotwords_for(listen) if listen is not None else None
        t0 = time.perf_counter()
        for seconds in range(1, 9):
            clip = np.resize(speech, seconds * RATE)  # repeats a short prompt to fill the length
            state = context.biaser.start() if context is not None else None
            await self.batcher.transcribe(Utterance(clip, RATE, state, context.prompt if context else ""))
        log.info("first-turn decoding warmed up in %.1f s", time.perf_counter() - t0)

    async def _start_hotwords(self) -> None:
        assert self.recognizer is not None
        self.hotwords = HotwordRegistry(self.hotword_store, self.recognizer.tokenizer, self.config.hotwords)
        await self.hotwords.start()
        assert self.flow is not None
        try:
            self._hotword_scopes = (validate_scope(f"flow:{self.flow.id}"),)
        except ValueError:
            log.warning("flow id %r cannot name a hot-word scope: only global lists apply", self.flow.id)
            self._hotword_scopes = ()

    def tokenizer(self):
        """The model's tokenizer once the recognizer has loaded (the hot-word API checks uploads)."""
        return self.recognizer.tokenizer if self.recognizer is not None else None

    async def _hotwords_for(self, listen: act.Listen) -> HotwordContext | None:
        """A node's hot words, and the vocabulary of its closed grammar (digits, yes/no) for the decoder."""
        hot = await self._node_hotwords(listen)
        vocabulary = await self._vocabulary(listen.grammar)
        if vocabulary is None:
            return hot
        if hot is None:
            return HotwordContext(vocabulary)
        return dataclasses.replace(hot, biaser=Combined((hot.biaser, vocabulary)))

    async def _vocabulary(self, grammar: str) -> Vocabulary | None:
        if grammar not in self._vocabularies:
            assert self.recognizer is not None
            boost = self.config.recognizer.decode.grammar_boost
            # Built once per grammar, off the event loop: it reads the whole token table.
            vocabulary = await asyncio.to_thread(grammar_vocabulary, self.recognizer.tokenizer, grammar, boost)
            self._vocabularies[grammar] = vocabulary
        return self._vocabularies[grammar]

    async def _node_hotwords(self, listen: act.Listen) -> HotwordContext | None:
        """A node's literal hot words and named lists, with the global and this flow's lists."""
        assert self.hotwords is not None
        if not (listen.hotwords or listen.hotword_lists or self.hotwords.lists):
            return None
        composed = await self.hotwords.biaser(
            scopes=self._hotword_scopes, lists=listen.hotword_lists, phrases=listen.hotwords
        )

        # A caller waits on every turn: one decode with the phrases as prompt, then its sound-alike
        # readings weighed on the audio (`Biasing.weigh`). `Biasing.refine` would also decode a second
        # time, which held the recognizer's worker: under 20 concurrent calls p95 went from 0.4 to 2.1 s.
        assert self.recognizer is not None
        biasing = Biasing(composed.graph, composed.corrector, gate_calls=self.config.hotwords.gate_calls)
        return HotwordContext(
            composed,
            composed.start().prompt_text(),
            partial(biasing.weigh, self.recognizer),
            lambda text: composed.record_hits(composed.hits_in(text)),
        )

    def start_pod_deletion_cost(self) -> None:
        """Keep the pod's pod-deletion-cost at its call count, where configured (from start to stop)."""
        if self.deletion_cost is not None:
            self.deletion_cost.start()

    async def start_sip(self) -> None:
        sip = self.config.sip
        self.sip = SipServer(
            sip.host,
            sip.port,
            on_call=self._on_sip_call,
            admission=self.admission,
            **sip.model_dump(exclude={"host", "port"}),
        )
        await self.sip.start()

    # -- calls -------------------------------------------------------------------------------------
    # The admission lets calls in only once loaded, when both handlers exist.
    async def _on_sip_call(self, call: IncomingCall) -> None:
        assert self._sip_handler is not None
        await self._sip_handler(call)

    async def _on_webrtc_call(self, leg: WebRtcLeg, info: CallInfo) -> None:
        assert self._webrtc_handler is not None
        await self._webrtc_handler(leg, info)

    @property
    def active_calls(self) -> int:
        return self.admission.active()

    # -- shutdown ----------------------------------------------------------------------------------
    def start_draining(self) -> None:
        """Refuse new calls from now on: /readyz 503, SIP 503 + Retry-After, WebRTC offers 503."""
        self.admission.start_draining()

    async def drain(self) -> None:
        """Refuse new calls and wait for the active ones, up to the drain timeout."""
        self.start_draining()
        timeout = self.config.calls.drain_timeout_s
        log.info("draining: %d active calls, waiting up to %.0f s", self.active_calls, timeout)
        try:
            await asyncio.wait_for(self.admission.wait_idle(), timeout)
        except TimeoutError:
            log.warning("drain timeout with %d calls still active", self.active_calls)

    async def stop(self) -> None:
        """Hang up what is left and release everything."""
        self.start_draining()
        if self.sip is not None:
            await self.sip.stop()
        await self.webrtc.close("server-shutdown")
        if self.deletion_cost is not None:
            await self.deletion_cost.aclose()
        if self.hotwords is not None:
            await self.hotwords.stop()
        await self.hotword_store.close()
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.close)
        if self.vad_batcher is not None:
            self.vad_batcher.close()
        if self.dialog_stores is not None:
            if not await self.dialog_stores.queue.flush(5.0):
                log.error("dialog store: %d writes not in Redis at shutdown", self.dialog_stores.queue.pending())
            await self.dialog_stores.queue.aclose()
        if self.redis is not None:
            await self.redis.aclose()
