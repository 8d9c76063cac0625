"""One call, end to end: the caller's media through the VAD and the recognizer into the dialog, and the
dialog's actions (prompts, listening, digits, routing) back out to the caller.

Per call, three tasks: the media reader (audio to the VAD buffer, keys to the dialog), the VAD task
(feeds the buffered audio to the call's `RecognitionStream` in the service's one VAD thread, stops a
prompt when the caller talks over it, hands finished utterances to the recognizer) and the driver (the
dialog turn by turn). The transport (SIP or WebRTC) is behind `CallControl`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np
from prometheus_client import Counter, Histogram

from asr_engine.batcher import RecognizerClosed, RecognizerOverloaded, RecognizerRestarted
from asr_engine.decoding.bias import Biaser
from asr_engine.recognizer import Refine, Transcript, Utterance
from asr_engine.vad import SpeechEnd, SpeechPause, SpeechStart, VadConfig, VadEvent, VadState
from asr_engine.vad_batch import Finish, VadBatcher
from dialog import actions as act
from dialog import events as ev
from dialog.context import ContextStore
from dialog.grammars import normalize, parse_digits
from dialog.policy import DialogPolicy
from dialog.records import RecordStore
from dialog.redact import mask
from dialog.session import DialogSession
from dialog.storage import StoreError
from ivr.calls.admission import Transport
from ivr.calls.prompt_cache import PromptCache
from ivr.calls.prompts import PromptError
from ivr.calls.turn_text import is_backchannel, looks_unfinished
from ivr.media.events import AudioFrame, DtmfDigit, Hangup, MediaLeg

log = logging.getLogger(__name__)

CALLS = Counter("voicenav_calls_total", "Calls that ended, by outcome", ["outcome"])
TURN_LATENCY = Histogram(
    "voicenav_turn_latency_seconds",
    "From the arrival of the caller's last voiced audio (VAD) to the start of the answering prompt",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
)
BARGE_INS = Counter("voicenav_barge_ins_total", "Prompts cut short by the caller", ["transport", "by"])
CALL_FAILURES = Counter(
    "voicenav_call_failures_total",
    "Failures on calls by cause: store, media, error end the call; hotwords: it goes on without them",
    ["cause"],
)
UTTERANCES_DROPPED = Counter(
    "voicenav_utterances_dropped_total", "Caller utterances that produced no transcript", ["reason"]
)

APOLOGY = "Sorry, we are having technical difficulties. Please call again later."


@dataclass(frozen=True)
class HotwordContext:
    """A flow node's hot words as the recognizer and the transcript see them."""

    biaser: Biaser
    prompt: str = ""  # previous text for the decoder
    refine: Refine | None = None  # rewrites a transcript (sound-alike spans -> the phrase)
    heard: Callable[[str], None] | None = None  # told each final transcript (hit counting)


HotwordsFor = Callable[[act.Listen], Awaitable[HotwordContext | None]]
_MAX_SPEECH_WAIT_S = 30.0  # longest a listen timeout waits for speech in progress to be transcribed
_ARRIVALS_KEPT_S = 40.0  # frame arrival times kept: more than any utterance (at most 30 s) and its padding
_VERDICT_WAIT_S = 5.0  # longest a paused prompt waits to learn whether the speech over it was a backchannel
_RESUME_REWIND_S = 0.3  # a resumed prompt starts this much before where it paused: not mid-word
_ONSET_GONE_S = 0.2  # silence after a possible onset that pauses a prompt: it was a click, not a word


class CallControl(Protocol):
    """What a call session needs from its transport besides media."""

    transport: Transport

    async def route(self, queue: str) -> None: ...

    async def transfer(self, uri: str) -> None: ...

    async def hangup(self, reason: str) -> None: ...

    def notify(self, event: dict[str, Any]) -> None:
        """Show the caller an event (WebRTC page); a no-op where there is no screen."""
        ...


class Transcriber(Protocol):
    """Turns a caller's utterance into text (the service's `BatchingRecognizer`)."""

    async def transcribe(self, utterance: Utterance, refine: Refine | None = None) -> Transcript: ...


class SpeechStream(Protocol):
    """One caller's audio cut into utterances by a VAD (`asr_engine.streaming.RecognitionStream`):
    fed in the VAD thread, read on the event loop."""

    @property
    def in_speech(self) -> bool: ...

    # Fed audio waits for the VAD batcher (asr_engine.vad_batch), which judges it with other calls'.
    def feed(self, sample_rate: int, samples: np.ndarray) -> None: ...

    def next_chunk(self) -> tuple[VadState, np.ndarray] | None: ...

    def judge(self, p: float) -> list[VadEvent]: ...

    def set_context(self, biaser: Biaser | None, prompt: str = "") -> None: ...

    def take_utterances(self) -> list[tuple[SpeechEnd, Utterance]]: ...

    # Turn timing: each listen's end of speech, a pause's audio decoded early, a key's end.
    @property
    def config(self) -> VadConfig: ...

    @property
    def voiced_end(self) -> float: ...

    @property
    def onset_voiced(self) -> float: ...

    def set_end_silence(self, ms: int, pause_ms: int | None = None) -> None: ...

    def utterance(self, samples: np.ndarray) -> Utterance: ...

    def input_finished(self) -> list[VadEvent]: ...


@dataclass
class CallDeps:
    """What every call of the service shares."""

    policy: DialogPolicy
    contexts: ContextStore
    records: RecordStore
    prompts: PromptCache
    recognizer: Transcriber
    speech_stream: Callable[[], SpeechStream]  # a new stream for each call
    vad: VadBatcher  # one thread for all calls' VAD work
    hotwords_for: HotwordsFor | None = None
    apology: str = APOLOGY
    apology_transfer: str | None = None  # where a call goes when the dialog can no longer serve it


@dataclass(frozen=True, slots=True)
class _Heard:
    text: str
    confidence: float
    speech_end: float  # loop time at which the caller's last voiced audio arrived
    transcribed: float  # loop time at which the transcript was ready


@dataclass(frozen=True, slots=True)
class _Key:
    digit: str


@dataclass(frozen=True, slots=True)
class _Gone:
    reason: str


class _CallGone(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallSession:
    """Run with `await session.run()`; returns the outcome ("route", "transfer", "hangup", "abandoned",
    "error"; a cancelled session is counted as "cancelled"). Feed keys from outside the media path
    (SIP INFO) with `dtmf`, the transport's end of the call with `leg_gone`."""

    def __init__(self, call_id: str, caller: str, leg: MediaLeg, control: CallControl, deps: CallDeps) -> None:
        self.call_id = call_id
        self.caller = caller
        self.leg = leg
        self.control = control
        self.deps = deps
        self.stream = deps.speech_stream()
        self.dialog = DialogSession(call_id, deps.policy, deps.contexts, deps.records, caller, control.transport)
        self._inbox: asyncio.Queue[_Heard | _Key | _Gone] = asyncio.Queue()
        self._audio: list[tuple[int, np.ndarray, float]] = []  # rate, samples, loop time of arrival
        self._fed_s = 0.0  # seconds of caller audio given to the VAD
        self._arrivals: deque[tuple[float, float]] = deque()  # (stream position after a frame, its arrival)
        self._audio_ready = asyncio.Event()
        self._asr: set[asyncio.Task[Any]] = set()  # decodes and the tasks that wait on them
        self._playing = False
        self._play_barge_in = False
        self._barged = False
        self._gone: str | None = None
        self._speech_end: float | None = None  # of the utterance whose answer is being played
        self._transcribed = 0.0
        self._hotwords: HotwordContext | None = None
        self._utterance_latency: list[float | None] = []  # per utterance turn, in order
        self._end_silence_ms: int | None = None  # of the turn being listened for; None: the stream's own
        self._end_key: str | None = None  # a key that ends the spoken turn at once
        self._end_now = False  # the end key came while the caller spoke: close the utterance
        self._expect_digits: int | None = None  # a spoken number this long is complete
        self._yes_no = False  # the coming turn answers a yes/no question ("okay" is an answer there)
        self._entry_wait_s: float | None = None  # inter-digit timeout of the entry being collected
        self._end_at: float | None = None  # close the utterance if its voiced audio still ends here
        # The decode started at the last pause, by where its voiced audio ends: the utterance's own if
        # the caller says no more (a pause longer than the padding gives the same audio).
        self._at_pause: tuple[float, asyncio.Task[Transcript]] | None = None
        # Speech over a prompt pauses it until it is known to be a backchannel (resume: False) or not
        # (stop: True); `_onset` is where that speech began, `_backchannel_end` where a backchannel's
        # voiced audio ended (its utterance is no turn).
        self._interruption: asyncio.Future[bool] | None = None
        self._onset: float | None = None
        self._backchannel_end: float | None = None
        self._last_end = 0.0  # stream position where the last utterance's voiced audio ended

    # -- inputs from the transport -----------------------------------------------------------------
    def dtmf(self, digit: str) -> None:
        if (self._playing and self._play_barge_in) or self._interrupted():
            self._barge_in("dtmf")
        if digit == self._end_key and (self.stream.in_speech or self._asr):
            # "five five five zero one three eight #": the key ends the spoken number instead of the
            # silence wait; it is not a keyed entry of its own.
            self._end_now = True
            self._audio_ready.set()
            return
        self._inbox.put_nowait(_Key(digit))

    def leg_gone(self, reason: str) -> None:
        if self._gone is None:
            self._gone = reason
            if self._playing:
                self.leg.stop_playback()
            if self._interrupted():
                assert self._interruption is not None
                self._interruption.set_result(True)
            self._inbox.put_nowait(_Gone(reason))

    # -- the call ----------------------------------------------------------------------------------
    async def run(self) -> str:
        reader = asyncio.create_task(self._read_media(), name=f"call-media-{self.call_id}")
        vad = asyncio.create_task(self._run_vad(), name=f"call-vad-{self.call_id}")
        for task in (reader, vad):
            task.add_done_callback(self._media_task_done)
        outcome = "error"
        try:
            outcome = await self._drive()
        except StoreError as exc:
            CALL_FAILURES.labels("store").inc()
            log.error("call %s: dialog store failed: %s", self.call_id, exc)
            await self._apologize()
        except _CallGone:
            outcome = "abandoned"
        except asyncio.CancelledError:
            outcome = "cancelled"  # the service is shutting down
            raise
        except Exception:
            CALL_FAILURES.labels("error").inc()
            log.exception("call %s failed", self.call_id)
            await self._apologize()
        finally:
            for task in (reader, vad, *self._asr):
                task.cancel()
            await asyncio.gather(reader, vad, *self._asr, return_exceptions=True)
            CALLS.labels(outcome).inc()
        await self._complete_record()
        return outcome

    async def _drive(self) -> str:
        try:
            actions = await self.dialog.start()
            while True:
                wait_s = await self._perform(actions)
                if isinstance(wait_s, str):
                    return wait_s
                event = await self._next_event(wait_s)
                actions = await self.dialog.handle(event)
        except _CallGone as gone:
            # The caller left: the dialog writes the call record with the reason.
            await self.dialog.handle(ev.Hangup(gone.reason))
            raise

    async def _perform(self, actions: list[act.Action]) -> float | str | None:
        """Carry out `actions` in order. Returns the outcome when the call has left the dialog, else
        how long to wait for the caller (None: no limit)."""
        if not actions:
            # A key or a spoken digit group joined the entry: wait for the rest as long as for a key.
            return self._entry_wait_s
        wait_s: float | None = None
        self._barged = False
        self._endpointing(actions)
        for action in actions:
            if self._gone is not None:
                raise _CallGone(self._gone)
            match action:
                case act.Play():
                    if not self._barged:  # the caller is talking: the rest of the prompts would cut in
                        await self._play(action)
                case act.Listen():
                    await self._listen_context(action)
                    wait_s = action.timeout_ms / 1000
                    self._entry_wait_s = None
                case act.CollectDigits():
                    wait_s = self._entry_wait_s = action.timeout_ms / 1000
                case act.Route(queue=queue):
                    self.control.notify({"type": "route", "queue": queue})
                    await self.control.route(queue)
                    return "route"
                case act.Transfer(uri=uri):
                    await self.control.transfer(uri)
                    return "transfer"
                case act.Hangup(reason=reason):
                    await self.control.hangup(reason)
                    return "hangup"
        return wait_s

    def _endpointing(self, actions: list[act.Action]) -> None:
        """The coming turn's end-of-speech rule, set before its prompts play: a caller who talks over
        the prompt is already answering it."""
        listen = next((a for a in actions if isinstance(a, act.Listen)), None)
        if listen is None:
            return
        self._end_silence_ms = listen.end_silence_ms
        self._end_key = listen.end_key
        self._expect_digits = listen.expect_digits
        self._yes_no = listen.grammar == "yes_no"

    async def _listen_context(self, listen: act.Listen) -> None:
        """The node's hot words for the recognizer; without them (a failed list) recognition goes on."""
        context = None
        if self.deps.hotwords_for is not None:
            try:
                context = await self.deps.hotwords_for(listen)
            except Exception:
                CALL_FAILURES.labels("hotwords").inc()
                log.exception("call %s: hot words for %s unavailable", self.call_id, listen.hotword_lists)
        if context is None:
            self.stream.set_context(None, "")
            self._hotwords = None
            return
        self.stream.set_context(context.biaser, context.prompt)
        self._hotwords = context

    async def _play(self, play: act.Play) -> None:
        try:
            prompt = await self.deps.prompts.get(play)
        except PromptError as exc:
            # A prompt text may read the caller's number back: its digits stay out of the log.
            log.error("call %s: prompt %r unavailable: %s", self.call_id, play.wav or mask(play.text or ""), exc)
            return
        if play.barge_in and await self._caller_went_on():
            # The caller went on after their turn was ended (or started the next one): an answer
            # would talk over them. Their speech is the next turn.
            self._barge_in("speech")
            return
        loop = asyncio.get_running_loop()
        if self._speech_end is not None:
            latency = loop.time() - self._speech_end
            TURN_LATENCY.observe(latency)
            log.debug(
                "call %s: answer after %.0f ms (transcript after %.0f ms)",
                self.call_id,
                latency * 1000,
                (self._transcribed - self._speech_end) * 1000,
            )
            self._speech_end = None
            self._utterance_latency[-1] = round(latency * 1000, 1)
        if play.text:
            self.control.notify({"type": "prompt", "text": play.text})
        await self._speak(prompt.pcm, prompt.sample_rate, play.barge_in)

    async def _speak(self, pcm: np.ndarray, rate: int, barge_in: bool) -> None:
        """Play to the end, unless the caller stops it; a prompt paused by speech over it resumes when
        that speech was a backchannel, a cough or noise."""
        loop = asyncio.get_running_loop()
        offset = 0
        while True:
            self._playing, self._play_barge_in = True, barge_in
            started = loop.time()
            try:
                done = await self.leg.play(pcm[offset:], rate)
            finally:
                self._playing = False
            interruption, self._interruption = self._interruption, None
            if done or interruption is None:
                return  # played out, or stopped (a key, a hang-up)
            offset += int((loop.time() - started) * rate)
            self._interruption = interruption
            try:
                stop = await asyncio.wait_for(asyncio.shield(interruption), _VERDICT_WAIT_S)
            except TimeoutError:
                stop = True
            finally:
                self._interruption = None
            if stop or self._gone is not None:
                return
            if self._caller_speaking():
                self._barge_in("speech")
                return
            offset = max(0, offset - int(_RESUME_REWIND_S * rate))
            if offset >= len(pcm):
                return

    async def _next_event(self, wait_s: float | None) -> ev.Event:
        loop = asyncio.get_running_loop()
        self._speech_end = None  # a turn answered without a prompt measures nothing
        deadline = None if wait_s is None else loop.time() + wait_s
        extended = 0.0
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                item = await asyncio.wait_for(self._inbox.get(), timeout)
            except TimeoutError:
                # Speech in progress or being transcribed is not "no input": wait for its transcript.
                if (self.stream.in_speech or self._asr) and extended < _MAX_SPEECH_WAIT_S:
                    extended += 0.25
                    deadline = loop.time() + 0.25
                    continue
                return ev.NoInput()
            match item:
                case _Heard():
                    self._speech_end = item.speech_end
                    self._transcribed = item.transcribed
                    self._utterance_latency.append(None)
                    return ev.Utterance(item.text, confidence=item.confidence)
                case _Key():
                    return ev.Dtmf(item.digit)
                case _Gone():
                    raise _CallGone(item.reason)

    # -- media -------------------------------------------------------------------------------------
    async def _read_media(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self.leg.recv()
            if isinstance(item, AudioFrame):
                arrived = item.arrival if item.arrival is not None else loop.time()
                self._audio.append((item.sample_rate, item.pcm, arrived))
                self._audio_ready.set()
            elif isinstance(item, DtmfDigit):
                self.dtmf(item.digit)
            elif isinstance(item, Hangup):
                self.leg_gone(item.reason)
                return

    def _accept(self, chunks: list[tuple[int, np.ndarray]]) -> Finish:
        """Runs in the VAD thread: consecutive frames of one rate go to the stream in one piece; the
        batcher judges them, then runs what this returns."""
        end_ms = self._end_silence_ms or self.stream.config.min_silence_ms
        self.stream.set_end_silence(*self._turn_end(end_ms))
        # Taken before the audio: an end asked for while this runs is kept for the next pass.
        end_now, self._end_now = self._end_now, False
        end_at, self._end_at = self._end_at, None
        i = 0
        while i < len(chunks):
            rate = chunks[i][0]
            j = i
            while j < len(chunks) and chunks[j][0] == rate:
                j += 1
            self.stream.feed(rate, np.concatenate([c for _, c in chunks[i:j]]))
            i = j

        def finish() -> list[VadEvent]:
            # The caller must not have gone on since the end was asked for.
            if end_now or (end_at is not None and self.stream.voiced_end == end_at):
                return self.stream.input_finished()
            return []

        return finish

    async def _run_vad(self) -> None:
        while True:
            await self._audio_ready.wait()
            self._audio_ready.clear()
            frames, self._audio = self._audio, []
            for rate, pcm, arrived in frames:
                self._fed_s += len(pcm) / rate
                self._arrivals.append((self._fed_s, arrived))
            while self._arrivals and self._arrivals[0][0] < self._fed_s - _ARRIVALS_KEPT_S:
                self._arrivals.popleft()
            chunks = [(rate, pcm) for rate, pcm, _ in frames]
            events = await self.deps.vad.run(self.stream, partial(self._accept, chunks))
            for event in events:
                if isinstance(event, SpeechStart):
                    self._speech_started(event)
                elif isinstance(event, SpeechPause):
                    self._decode_at_pause(event)
                elif isinstance(event, SpeechEnd):
                    self._onset = None
                    for seg, utterance in self.stream.take_utterances():
                        self._last_end = seg.voiced_end
                        if seg.voiced_end == self._backchannel_end:
                            UTTERANCES_DROPPED.labels("backchannel").inc()
                            continue
                        at_pause, self._at_pause = self._at_pause, None
                        decoding = at_pause[1] if at_pause is not None and at_pause[0] == seg.voiced_end else None
                        self._track(self._transcribe(utterance, self._arrival_of(seg.voiced_end), decoding))
            self._check_speech_over_prompt()

    def _track(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._asr.add(task)
        task.add_done_callback(self._asr.discard)
        return task

    def _turn_end(self, end_ms: int) -> tuple[int, int | None]:
        """The silence that ends the coming turn, and the pause at which it is decoded before that
        silence has run out. A turn the decode shows complete ends at the pause; one that is no answer
        yet (the dialog would ask again, a number short of its digits, words that trail off) waits
        for the longer of its end silence and the hold. The pause: the service's early end, the
        usual end where a hold follows it, and at a digits node the service's end of speech."""
        config = self.stream.config
        silence = max(end_ms, config.hold_ms or 0)
        pauses = [config.early_end_ms, end_ms if silence > end_ms else None]
        if self._expect_digits:
            pauses.append(config.min_silence_ms)
        pause = min((ms for ms in pauses if ms is not None), default=None)
        return silence, pause if pause is not None and pause < silence else None

    def _decode_at_pause(self, pause: SpeechPause) -> None:
        hot = self._hotwords
        utterance = self.stream.utterance(pause.samples)
        decoding = self._track(self.deps.recognizer.transcribe(utterance, hot.refine if hot else None))
        self._at_pause = (pause.voiced_end, decoding)
        self._track(self._end_if_complete(pause, decoding))

    async def _end_if_complete(self, pause: SpeechPause, decoding: asyncio.Task[Transcript]) -> None:
        """A turn that is complete at the pause (a number with all its digits, a request the dialog
        acts on) ends there if the caller has said nothing more; the decode is the turn's."""
        try:
            transcript = await asyncio.shield(decoding)
        except Exception:
            return  # the turn's own transcription reports it
        if self._interrupted() and await self._backchannel(transcript, pause.voiced_end):
            return
        if await self._complete(transcript) and self.stream.in_speech and self.stream.voiced_end == pause.voiced_end:
            self._end_at = pause.voiced_end  # unless the caller goes on before the VAD thread sees it
            self._audio_ready.set()

    async def _complete(self, transcript: Transcript) -> bool:
        """Whether the turn can end with this transcript: a number with all its digits, a request the
        dialog acts on that does not trail off."""
        if self._expect_digits:
            return len(parse_digits(normalize(transcript.text)).digits) >= self._expect_digits
        return not looks_unfinished(transcript.text) and await self._actionable(transcript)

    async def _actionable(self, transcript: Transcript) -> bool:
        """Whether the dialog would act on this transcript rather than ask again."""
        if not transcript.text.strip():
            return False
        try:
            context = await self.deps.contexts.get(self.call_id)
        except StoreError:
            return False  # wait for the silence; the turn itself will meet the store's trouble
        if context is None:
            return False
        decision = self.deps.policy.decide(context, ev.Utterance(transcript.text, confidence=transcript.confidence))
        return decision.context.no_match_count == context.no_match_count

    def _arrival_of(self, position: float) -> float:
        """Loop time at which the caller audio at `position` (seconds into the stream) arrived: the
        caller's wait for an answer starts there, not when the VAD decided the speech had ended."""
        for end, arrived in self._arrivals:
            if end >= position:
                return arrived
        return self._arrivals[-1][1]

    def _media_task_done(self, task: asyncio.Task[None]) -> None:
        """A media task that fails leaves the call deaf: end it rather than wait on silence."""
        if not task.cancelled() and task.exception() is not None:
            CALL_FAILURES.labels("media").inc()
            log.error("call %s: %s failed", self.call_id, task.get_name(), exc_info=task.exception())
            self.leg_gone("media-error")

    # -- barge-in ----------------------------------------------------------------------------------
    def _interrupted(self) -> bool:
        """A prompt is paused by speech over it, and what that speech was is not known yet."""
        return self._interruption is not None and not self._interruption.done()

    def _caller_speaking(self) -> bool:
        """The VAD is in speech (other than a backchannel being closed)."""
        return self.stream.in_speech and self.stream.voiced_end != self._backchannel_end

    async def _caller_went_on(self) -> bool:
        """Whether the caller is talking as a prompt is about to start. Voice heard since the last
        utterance ended, not yet long enough to be speech, is waited on until the VAD can tell (a
        word's start, or a click)."""
        if self._caller_speaking():
            return True
        if self.stream.voiced_end <= self._last_end:
            return False
        for _ in range(self.stream.config.min_speech_ms // 20 + 3):  # the VAD's own delay on top
            await asyncio.sleep(0.02)
            if self._caller_speaking():
                return True
        self._last_end = self.stream.voiced_end  # noise: the next prompt need not wait on it again
        return False

    def _speech_started(self, start: SpeechStart) -> None:
        """Speech over a barge-in prompt pauses it (if its onset has not already); its length or
        transcript decides whether the prompt stops or resumes."""
        if self._interrupted():
            self._onset = start.at
            return
        if not (self._playing and self._play_barge_in):
            return
        if self.stream.config.backchannel_ms == 0:
            self._barge_in("speech")
            return
        self._onset = start.at
        self._pause_prompt()

    def _pause_prompt(self) -> None:
        self._interruption = asyncio.get_running_loop().create_future()
        self.leg.stop_playback()

    def _check_speech_over_prompt(self) -> None:
        """After each pass of the VAD: a possible onset over a prompt pauses it before the VAD confirms
        speech (a stop within ~200 ms of the first word); one that stops short of speech resumes
        it; speech that goes on longer than a backchannel stops it."""
        config = self.stream.config
        playing = self._playing and self._play_barge_in
        if playing and config.backchannel_ms and self.stream.onset_voiced >= config.barge_in_ms / 1000:
            self._pause_prompt()
            return
        if self._interrupted() and self._onset is None and not self.stream.in_speech:
            if not self.stream.onset_voiced or self._fed_s - self.stream.voiced_end >= _ONSET_GONE_S:
                assert self._interruption is not None
                self._interruption.set_result(False)  # a click or a breath, not a word
            return
        if self._onset is None or not self.stream.in_speech:
            return
        if not (self._interrupted() or playing):
            return
        if self.stream.voiced_end - self._onset >= config.backchannel_ms / 1000:
            self._barge_in("speech")

    async def _backchannel(self, transcript: Transcript, voiced_end: float | None = None) -> bool:
        """Judge the short speech that paused a prompt by its transcript: nothing (a cough, noise), a
        backchannel, or words the dialog would not act on and without digits (what Whisper makes of
        a short "mm-hmm") resume the prompt; anything else stops it. `voiced_end`: the speech is
        still an open utterance, closed here (unless the caller went on) so that the next speech is
        judged afresh."""
        text = transcript.text
        listening = not text.strip() or is_backchannel(text, self._yes_no)
        if not listening and not parse_digits(normalize(text)).digits:
            listening = not await self._actionable(transcript)
        if not self._interrupted():
            return False  # decided meanwhile (a key, its length)
        assert self._interruption is not None
        if not listening:
            self._barge_in("speech")
            return False
        if voiced_end is not None:
            if self.stream.voiced_end != voiced_end:
                return False  # the caller went on: their speech's length decides
            self._backchannel_end = self._end_at = voiced_end
            self._audio_ready.set()
        UTTERANCES_DROPPED.labels("backchannel").inc()
        self._interruption.set_result(False)
        return True

    def _barge_in(self, by: str) -> None:
        self.leg.stop_playback()
        self._barged = True
        self._playing = False
        if self._interrupted():
            assert self._interruption is not None
            self._interruption.set_result(True)
        BARGE_INS.labels(self.control.transport, by).inc()

    async def _transcribe(
        self, utterance: Utterance, speech_end: float, decoding: asyncio.Task[Transcript] | None = None
    ) -> None:
        """`decoding`: the same audio's decode, started at the last pause."""
        try:
            hot = self._hotwords
            refine = hot.refine if hot is not None else None
            transcript = await (decoding or self.deps.recognizer.transcribe(utterance, refine))
        except RecognizerOverloaded:
            UTTERANCES_DROPPED.labels("overloaded").inc()
            log.warning("call %s: recognizer overloaded, utterance dropped", self.call_id)
            # The caller said something: the dialog answers with its no-match prompt.
            self._inbox.put_nowait(_Heard("", 0.0, speech_end, asyncio.get_running_loop().time()))
            return
        except RecognizerRestarted:
            UTTERANCES_DROPPED.labels("worker-restart").inc()
            log.warning("call %s: recognizer worker restarted, caller asked again", self.call_id)
            # Not silence, not a hang-up: the dialog re-prompts with its no-match prompt.
            self._inbox.put_nowait(_Heard("", 0.0, speech_end, asyncio.get_running_loop().time()))
            return
        except RecognizerClosed:
            UTTERANCES_DROPPED.labels("shutdown").inc()
            return
        except Exception:
            UTTERANCES_DROPPED.labels("error").inc()
            log.exception("call %s: recognition failed", self.call_id)
            self._inbox.put_nowait(_Heard("", 0.0, speech_end, asyncio.get_running_loop().time()))
            return
        if self._interrupted() and await self._backchannel(transcript):
            return
        if not transcript.text.strip():
            # Noise, a cough, the line's own echo: not a turn.
            UTTERANCES_DROPPED.labels(transcript.rejected or "empty").inc()
            return
        text = transcript.text
        if hot is not None and hot.heard is not None:
            hot.heard(text)
        self.control.notify({"type": "transcript", "text": text})
        now = asyncio.get_running_loop().time()
        self._inbox.put_nowait(_Heard(text, transcript.confidence, speech_end, now))

    # -- failure and bookkeeping -------------------------------------------------------------------
    async def _apologize(self) -> None:
        """The dialog cannot go on (store outage, a bug): say so, then transfer or hang up."""
        if self._gone is not None:
            return
        try:
            prompt = await self.deps.prompts.text(self.deps.apology)
            await self.leg.play(prompt.pcm, prompt.sample_rate)
            if self.deps.apology_transfer:
                await self.control.transfer(self.deps.apology_transfer)
            else:
                await self.control.hangup("service-unavailable")
        except Exception:
            log.exception("call %s: could not end the call gracefully", self.call_id)

    async def _complete_record(self) -> None:
        """The dialog stores each turn before its answer plays; add the measured answer latencies."""
        measured = list(self._utterance_latency)
        if not any(m is not None for m in measured):
            return
        try:
            record = await self.deps.records.get(self.call_id)
            if record is None:
                return
            utterance_turns = [t for t in record.turns if t.event == "utterance"]
            turns = list(record.turns)
            for turn, ms in zip(utterance_turns, measured, strict=False):
                if ms is not None:
                    turns[turns.index(turn)] = turn.model_copy(update={"latency_ms": ms})
            await self.deps.records.save(record.model_copy(update={"turns": turns}))
        except StoreError as exc:
            log.warning("call %s: turn latencies not added to the record: %s", self.call_id, exc)
