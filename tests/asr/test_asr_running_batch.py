"""The running batch on real recordings: requests that join a batch between decoder steps (beside rows
of other self-attention and encoder lengths, prompted or not, biased or not) decode to what they
decode to together from the first step; a request that ends early leaves at once.

On float32 weights: dynamic int8 quantization scales a step's activations over all its rows, so there
a row's log-probabilities move a little with whoever shares its steps, in any batch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pytest

from asr_engine.audio.wav import read_wav
from asr_engine.decoding.running import RunningBatch
from asr_engine.decoding.search import DecodeRequest, DecodeResult
from asr_engine.recognizer import Utterance

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class PhraseBias:
    """Boosts the next token of one phrase; abandoning it takes back what it was granted."""

    phrase: tuple[int, ...]
    at: int = 0
    boost: float = 2.0

    def boosts(self) -> Mapping[int, float]:
        return {self.phrase[self.at]: self.boost} if self.at < len(self.phrase) else {}

    def advance(self, token: int) -> tuple[PhraseBias, float]:
        if self.at == len(self.phrase):  # said whole: it keeps what it was granted
            return PhraseBias(self.phrase, 0, self.boost).advance(token)
        if token == self.phrase[self.at]:
            return PhraseBias(self.phrase, self.at + 1, self.boost), 0.0
        return PhraseBias(self.phrase, 0, self.boost), -self.boost * self.at

    def prompt_text(self) -> str:
        return ""


@pytest.fixture(scope="module")
def recognizer(model_cache):
    from asr_engine.config import EngineConfig, RecognizerConfig
    from asr_engine.recognizer import Recognizer

    return Recognizer(RecognizerConfig(engine=EngineConfig(cache_dir=model_cache, int8="none")))


@pytest.fixture(scope="module")
def requests(recognizer, asterisk_dev) -> list[DecodeRequest]:
    """Seven Asterisk prompts of different lengths, each encoded alone; two prompted, two biased."""
    by_name = {p.stem: p for p, _ in asterisk_dev}
    names = [
        "agent-pass",
        "all-circuits-busy-now",
        "conf-adminmenu",
        "auth-incorrect",
        "conf-hasleft",
        "basic-pbx-ivr-main",
        "call-forwarding",
    ]
    tok = recognizer.tokenizer
    out = []
    for i, name in enumerate(n for n in names if n in by_name):
        clip = read_wav(str(by_name[name]))
        (t,) = recognizer.recognize([Utterance(clip.samples, clip.sample_rate)])
        assert t.encoding is not None
        prompt = tok.encode(" Thank you for calling. Your account number please.") if i in (1, 4) else []
        bias = PhraseBias(tuple(tok.encode(" password"))) if i in (0, 3) else None
        out.append(DecodeRequest(*t.encoding, clip.seconds, prompt, bias))
    assert len(out) >= 6 and len({r.cross_k.shape[1] for r in out}) >= 3
    return out


def _staggered(batch: RunningBatch, reqs: list[DecodeRequest]) -> tuple[dict[int, DecodeResult], list[int]]:
    """Requests join a few at a time, with steps between: one, then two after 2 steps, then the rest
    one by one every 3 steps. Returns the results and the order the requests ended in."""
    results: dict[int, DecodeResult] = {}
    order: list[int] = []
    waves = [[0], [1, 2], *([i] for i in range(3, len(reqs)))]
    steps = 0
    while waves or len(batch):
        if waves and (steps == 0 or steps % 3 == 2 or not len(batch)):
            batch.admit([(i, reqs[i]) for i in waves.pop(0)])
        for key, result in batch.step():
            results[key] = result
            order.append(key)
        steps += 1
    return results, order


@pytest.mark.parametrize("beam_size", [1, 3])
def test_joining_between_steps_decodes_as_one_batch(recognizer, requests, beam_size):
    cfg = recognizer.config.decode.model_copy(update={"beam_size": beam_size})
    together = recognizer.searcher.decode(requests, cfg, recognizer.tail)
    assert sum(bool(r.tokens) for r in together) >= len(requests) - 1
    joined, _ = _staggered(RunningBatch(recognizer.searcher, cfg, recognizer.tail), requests)
    assert sorted(joined) == list(range(len(requests)))
    for i, (a, b) in enumerate(zip(together, (joined[i] for i in range(len(requests))), strict=True)):
        assert b.tokens == a.tokens, (i, recognizer.tokenizer.decode(a.tokens), recognizer.tokenizer.decode(b.tokens))
        np.testing.assert_allclose(b.token_logprobs, a.token_logprobs, atol=1e-3)
        assert b.no_speech_prob == pytest.approx(a.no_speech_prob, abs=1e-3)
        assert b.bias_score == pytest.approx(a.bias_score, abs=1e-3)
    # The biased requests were boosted (and kept their bias states from step to step).
    assert any(together[i].bias_score != 0.0 for i in (0, 3))


def test_a_request_that_ends_early_leaves_before_the_longest(recognizer, requests):
    cfg = recognizer.config.decode
    batch = RunningBatch(recognizer.searcher, cfg, recognizer.tail)
    batch.admit(list(enumerate(requests)))
    lengths = {i: len(r.tokens) for i, r in enumerate(recognizer.searcher.decode(requests, cfg, recognizer.tail))}
    ended_at: dict[int, int] = {}
    rows_seen: list[int] = []
    step = 0
    while len(batch):
        rows_seen.append(batch.rows)
        ended_at.update((key, step) for key, _ in batch.step())
        step += 1
    shortest, longest = min(lengths, key=lengths.get), max(lengths, key=lengths.get)
    assert ended_at[shortest] < ended_at[longest]
    # Rows of ended requests are gone from later steps.
    assert rows_seen[-1] < rows_seen[0]


def test_a_cancelled_request_frees_its_rows(recognizer, requests):
    cfg = recognizer.config.decode
    batch = RunningBatch(recognizer.searcher, cfg, recognizer.tail)
    batch.admit([(0, requests[0]), (1, requests[1])])
    batch.step()
    assert batch.cancel(1) and not batch.cancel(1)
    assert len(batch) == 1 and batch.rows == 1
    out = {}
    while len(batch):
        out.update(batch.step())
    assert list(out) == [0]
    assert out[0].tokens == recognizer.searcher.decode([requests[0]], cfg, recognizer.tail)[0].tokens
    with pytest.raises(ValueError):
        batch.admit([(2, requests[2]), (2, requests[3])])


def test_cancelling_the_only_request_empties_the_batch(recognizer, requests):
    """A caller who goes on talking after the early decode cancels it, often the only one running."""
    cfg = recognizer.config.decode
    batch = RunningBatch(recognizer.searcher, cfg, recognizer.tail)
    batch.admit([(0, requests[0])])
    batch.step()
    assert batch.cancel(0)
    assert len(batch) == 0 and batch.rows == 0
    batch.admit([(1, requests[1])])
    out = {}
    while len(batch):
        out.update(batch.step())
    assert out[1].tokens == recognizer.searcher.decode([requests[1]], cfg, recognizer.tail)[0].tokens


async def test_the_batcher_answers_short_turns_before_long_rows_end(recognizer, asterisk_dev):
    """Through the batcher: a caller who speaks while a long upload chunk decodes gets the transcript
    before the chunk's; of two callers decoded together, the short turn is out before the long one."""
    import threading

    from asr_engine.batcher import BatchingRecognizer, Priority

    by_name = {p.stem: p for p, _ in asterisk_dev}
    long, short = (read_wav(str(by_name[n])) for n in ("basic-pbx-ivr-main", "agent-pass"))
    encoded = threading.Event()
    original = recognizer.encode

    def encode(utts):
        out = original(utts)
        encoded.set()
        return out

    recognizer.encode = encode
    batcher = BatchingRecognizer(recognizer, max_batch=4, max_wait_ms=200)
    try:
        upload = asyncio.create_task(
            batcher.transcribe_all([Utterance(long.samples, long.sample_rate)], None, Priority.UPLOAD)
        )
        assert await asyncio.to_thread(encoded.wait, 60)  # the chunk is in
        call = await batcher.transcribe(Utterance(short.samples, short.sample_rate))
        assert call.text and not upload.done()
        (chunk,) = await upload
        assert len(chunk.tokens) > 3 * len(call.tokens)

        turns = [asyncio.create_task(batcher.transcribe(Utterance(c.samples, c.sample_rate))) for c in (long, short)]
        done, _ = await asyncio.wait(turns, return_when=asyncio.FIRST_COMPLETED)
        assert done == {turns[1]} and not turns[0].done()
        assert (await turns[0]).text == chunk.text and turns[1].result().text
    finally:
        recognizer.encode = original
        batcher.close()


def test_a_degenerate_prompted_decode_is_redone_without_its_prompt_in_the_running_batch(recognizer, asterisk_dev):
    """A prompted row judged degenerate joins the batch again without its prompt, on its encoding,
    while the other rows go on; its transcript is the unprompted decode's."""
    by_name = {p.stem: p for p, _ in asterisk_dev}
    clips = [read_wav(str(by_name[n])) for n in ("agent-pass", "conf-adminmenu")]
    prompted = Utterance(clips[0].samples, clips[0].sample_rate, prompt="Thank you for calling.")
    plain = [Utterance(c.samples, c.sample_rate) for c in clips]
    expected = [recognizer.recognize([u])[0].text for u in plain]
    judged: list[bool] = []
    original = recognizer._degenerate
    recognizer._degenerate = lambda req, result: judged.append(bool(req.prompt)) or bool(req.prompt)
    try:
        run = recognizer.start()
        admitted: list[list[tuple[object, int]]] = []
        admit = run.batch.admit
        run.batch.admit = lambda items: admitted.append([(k, len(r.prompt)) for k, r in items]) or admit(items)
        run.admit([(0, prompted), (1, plain[1])])
        got = run.drain(2)
    finally:
        recognizer._degenerate = original
    assert admitted[0][0][1] > 0 and admitted[1:] == [[(0, 0)]]
    assert judged == [True] and [t.text for t in got] == expected
