"""The offline recognizer: audio in, text out, for one utterance or a batch of them.

Synchronous and CPU/GPU bound: callers on an event loop go through `batcher.BatchingRecognizer`,
which runs it in a worker thread.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .audio.mel import SAMPLE_RATE, log_mel
from .audio.resample import resample
from .config import RecognizerConfig
from .decoding.bias import BiasState
from .decoding.guards import compression_ratio, judged_logprob, repeated_tail
from .decoding.running import RunningBatch
from .decoding.search import DecodeRequest, DecodeResult, Searcher, SharedTail
from .engines.base import Engine
from .models.artifacts import kinds_for, missing_kinds, source_hash
from .models.dims import WhisperDims
from .models.formats import PREPARED, detect_format
from .models.registry import ModelNotFoundError, load_tokenizer, resolve_model, suppress_config
from .silence_tail import silence_tail, splice_for

log = logging.getLogger(__name__)

# Below this level (dBFS RMS) there is nothing to hear: Whisper would still "hear" its favourite
# words in digital silence, so such audio is not decoded at all.
SILENCE_DBFS = -65.0
# A prompted decode is redone without its prompt when its text is this sparse (words per second of
# the utterance, padding included; callers speak 2-3) or ends by saying a phrase twice.
MIN_WORDS_PER_SECOND = 0.8
BUCKET_FRAMES = 100


# An utterance's encoder output (cross-attention keys, values) as the decoder reads it.
Encoding = tuple[np.ndarray, np.ndarray]


@dataclass
class Utterance:
    samples: np.ndarray  # float32 mono
    sample_rate: int
    bias: BiasState | None = None
    prompt: str = ""  # previous text for the decoder (hot words can go here too: see `BiasState.prompt_text`)


@dataclass(frozen=True)
class Transcript:
    text: str
    tokens: list[int]  # decode to `text`
    confidence: float  # exp(mean token logprob) of the decode, 0 when empty
    avg_logprob: float
    no_speech_prob: float
    audio_seconds: float
    decode_seconds: float = 0.0
    rejected: str | None = None  # why text was withheld: "silence", "no-speech", "repetition"
    token_logprobs: list[float] = field(default_factory=list)  # one per token of a decode; none once rewritten
    # The encoder output this was decoded from, so that a refine step can score or decode the audio
    # again without encoding it; views into the batch's arrays, dropped (`released`) before keeping it.
    encoding: Encoding | None = field(default=None, repr=False, compare=False)
    # The decoded transcript a refine step rewrote into this one: the confidence and log-probabilities
    # above are that decode's, kept as they were.
    refined_from: Transcript | None = None

    def released(self) -> Transcript:
        """This transcript without its encoder output (which holds the whole batch's arrays)."""
        return self if self.encoding is None else replace(self, encoding=None)


# Reads a transcript again after decoding (e.g. a hot-word post-pass that weighs readings on the
# audio) and returns the text it should say: called where the model runs, with the utterance and its
# transcript (encoder output included), so it may score or decode the audio again.
Refine = Callable[[Utterance, Transcript], str]


def engine_for(config: RecognizerConfig, progress: Callable[[str], None] | None = None):
    """(engine, tokenizer, suppress config, dims) for a recognizer config, converting on first use."""
    ec = config.engine
    source = resolve_model(config.model_name(), ec.cache_dir)
    kinds = kinds_for(ec)
    if detect_format(source) == PREPARED:
        artifacts = source
        if missing := missing_kinds(artifacts, kinds):
            raise ModelNotFoundError(f"{source} is prepared without {', '.join(missing)} for {ec.kind} on {ec.device}")
    else:
        artifacts = ec.cache_dir / "artifacts" / source_hash(source)
        if missing_kinds(artifacts, kinds):
            # Converting needs PyTorch; loading converted graphs does not, so it is imported only here.
            from .models.export import prepare

            artifacts = prepare(source, ec.cache_dir / "artifacts", kinds, progress)
    dims = WhisperDims(**json.loads((artifacts / "meta.json").read_text())["dims"])
    tok = load_tokenizer(source, dims.n_vocab, ec.cache_dir)
    engine: Engine
    if ec.kind == "onnx":
        from .engines.onnx import OnnxEngine

        engine = OnnxEngine(artifacts, ec)
    else:
        from .engines.torchscript import TorchScriptEngine

        engine = TorchScriptEngine(artifacts, ec)
    return engine, tok, suppress_config(source, tok), dims


class Recognizer:
    def __init__(self, config: RecognizerConfig, progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.engine, self.tokenizer, suppress, self.dims = engine_for(config, progress)
        self.searcher = Searcher(self.engine, self.tokenizer, suppress, self.dims.n_text_ctx, self.dims.n_text_head)
        self.max_frames = 2 * self.dims.n_audio_ctx
        self.tail: SharedTail | None = None
        self.splice = splice_for(self.dims)
        if config.encoder_window == "spliced":
            self.tail = silence_tail(self.engine, self.dims, self.splice, self.max_frames)

    def warmup(self) -> None:
        """One throwaway decode so the first caller does not pay for kernel set-up."""
        noise = np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE).astype(np.float32)
        self.recognize([Utterance(noise, SAMPLE_RATE)])

    def _features(self, utt: Utterance) -> np.ndarray:
        x = resample(utt.samples, utt.sample_rate, SAMPLE_RATE)
        mel, pad = log_mel(x, self.dims.n_mels, self.splice.level if self.tail is not None else None)
        mel = mel[:, : self.max_frames]
        if self.config.encoder_window == "full":
            frames = self.max_frames
        else:
            # Silence appended after the speech before encoding: Whisper expects to see where speech ends.
            tail = self.splice.tail_frames
            frames = min(self.max_frames, -(-(mel.shape[1] + tail) // BUCKET_FRAMES) * BUCKET_FRAMES)
        return np.pad(mel, ((0, 0), (0, frames - mel.shape[1])), constant_values=pad)

    def start(self) -> Recognition:
        """An empty batch for utterances to join between decoder steps (`Recognition`)."""
        return Recognition(self)

    def recognize(self, utts: list[Utterance]) -> list[Transcript]:
        """Decode a batch together; results in input order."""
        run = self.start()
        run.admit(list(enumerate(utts)))
        return run.drain(len(utts))

    def encode(self, utts: Sequence[Utterance]) -> list[Encoding]:
        """Each utterance's encoder output, from one encoder run over all of them."""
        if not utts:
            return []
        feats = [self._features(u) for u in utts]
        width = max(f.shape[1] for f in feats)
        mel = np.stack([np.pad(f, ((0, 0), (0, width - f.shape[1])), mode="edge") for f in feats])
        cross_k, cross_v = self.engine.encode(mel)
        return [(cross_k[:, i, : f.shape[1] // 2], cross_v[:, i, : f.shape[1] // 2]) for i, f in enumerate(feats)]

    def request(self, utt: Utterance, encoding: Encoding) -> DecodeRequest:
        k, v = encoding
        return DecodeRequest(k, v, len(utt.samples) / utt.sample_rate, self._prompt(utt), utt.bias)

    def _prompt(self, utt: Utterance) -> list[int]:
        text = utt.prompt.strip()
        return self.tokenizer.encode(" " + text) if text else []

    def redecode(self, utt: Utterance, encoding: Encoding | None) -> Transcript:
        """Decode `utt` again (another prompt or bias) on its encoder output from an earlier decode."""
        if encoding is None:
            return self.recognize([utt])[0]
        run = self.start()
        run.admit_encoded([(0, utt, encoding)])
        return run.drain(1)[0]

    def compare(self, utt: Utterance, text: str, readings: list[str], encoding: Encoding | None = None) -> list[float]:
        """How much more likely (nats; negative: less) each reading is than `text` as the transcript of
        `utt`, judged where it differs from `text` (see `Searcher.compare`), with the prompt decoding
        used. The audio is encoded only when no `encoding` (a transcript's) is given."""
        if encoding is None:
            (encoding,) = self.encode([utt])
        req = replace(self.request(utt, encoding), bias=None)
        base, *others = (self.tokenizer.encode(" " + t.strip()) for t in (text, *readings))
        return self.searcher.compare(req, base, others, self.config.decode, self.tail)

    def _degenerate(self, req: DecodeRequest, r: DecodeResult) -> bool:
        """Too few words for the speech it heard, or text that repeats itself."""
        text = self.tokenizer.decode(r.tokens)
        words = len(text.split())
        looped = repeated_tail(r.tokens, max_repeats=1, max_ngram=max(3, len(r.tokens) // 2), min_ngram=3)
        return words < MIN_WORDS_PER_SECOND * req.seconds - 1 or looped is not None

    def rewritten(self, transcript: Transcript, text: str) -> Transcript:
        """`transcript` saying `text` instead (a refine step's reading): its tokens are those of `text`;
        its confidence stays the decode's, which `refined_from` keeps."""
        if text == transcript.text:
            return transcript
        return replace(
            transcript,
            text=text,
            tokens=self.tokenizer.encode(" " + text) if text else [],
            token_logprobs=[],
            refined_from=transcript.released(),
        )

    def refined(self, refine: Refine, utt: Utterance, transcript: Transcript) -> Transcript:
        """`transcript` as `refine` reads it; a transcript with no text is left alone."""
        return self.rewritten(transcript, refine(utt, transcript)) if transcript.text else transcript

    def _transcript(self, utt: Utterance, r, elapsed: float, encoding: Encoding) -> Transcript:
        cfg = self.config.decode
        text = self.tokenizer.decode(r.tokens).strip()
        rejected = None
        unsure = judged_logprob(r.token_logprobs, r.end_logprob) < cfg.logprob_threshold
        rms = float(np.sqrt(np.mean(np.square(utt.samples, dtype=np.float64)))) if len(utt.samples) else 0.0
        if 20 * np.log10(rms + 1e-12) < SILENCE_DBFS:
            rejected = "silence"
        elif r.no_speech_prob > cfg.no_speech_threshold and unsure:
            rejected = "no-speech"
        elif compression_ratio(text) > cfg.compression_ratio_threshold and unsure:
            rejected = "repetition"
        if rejected:
            text = ""
        return Transcript(
            text=text,
            tokens=[] if rejected else r.tokens,
            confidence=float(np.exp(r.avg_logprob)) if text else 0.0,
            avg_logprob=r.avg_logprob,
            no_speech_prob=r.no_speech_prob,
            audio_seconds=len(utt.samples) / utt.sample_rate,
            decode_seconds=elapsed,
            rejected=rejected,
            token_logprobs=r.token_logprobs,
            encoding=encoding,
        )


class Recognition:
    """Utterances decoded together, each joining between decoder steps and out as soon as its own search
    ends (`decoding.running.RunningBatch`), keyed by whatever the caller names them with."""

    def __init__(self, recognizer: Recognizer) -> None:
        self.recognizer = recognizer
        self.batch = RunningBatch(recognizer.searcher, recognizer.config.decode, recognizer.tail)
        self._pending: dict[Hashable, tuple[Utterance, DecodeRequest, float]] = {}  # with when it was admitted

    def __len__(self) -> int:
        """Utterances being decoded."""
        return len(self._pending)

    def admit(self, items: Sequence[tuple[Hashable, Utterance]]) -> None:
        """Encode `items` (key, utterance) together and start decoding them at the next `step`."""
        started = time.perf_counter()
        encodings = self.recognizer.encode([u for _, u in items])
        self.admit_encoded([(k, u, e) for (k, u), e in zip(items, encodings, strict=True)], started)

    def admit_encoded(
        self, items: Sequence[tuple[Hashable, Utterance, Encoding]], started: float | None = None
    ) -> None:
        """`admit` for utterances already encoded (an earlier transcript's `encoding`)."""
        started = time.perf_counter() if started is None else started
        reqs = [(k, self.recognizer.request(u, e)) for k, u, e in items]
        self.batch.admit(reqs)
        self._pending.update((k, (u, r, started)) for (k, u, _), (_, r) in zip(items, reqs, strict=True))

    def step(self) -> list[tuple[Hashable, Transcript]]:
        """One decoder step; the utterances it finished, with their transcripts (encoder output kept)."""
        rec, out = self.recognizer, []
        for key, result in self.batch.step():
            utt, req, started = self._pending[key]
            # A prompt can take over: Whisper then copies it or loops instead of transcribing. Such rows
            # are decoded again without it (as Whisper's own fallback drops the previous text).
            if req.prompt and rec._degenerate(req, result):
                again = replace(req, prompt=[])
                self.batch.admit([(key, again)])
                self._pending[key] = (utt, again, started)
                continue
            del self._pending[key]
            encoding = (req.cross_k, req.cross_v)
            out.append((key, rec._transcript(utt, result, time.perf_counter() - started, encoding)))
        return out

    def cancel(self, key: Hashable) -> None:
        """Stop decoding `key`'s utterance (if it is here) and free its rows."""
        if self._pending.pop(key, None) is not None:
            self.batch.cancel(key)

    def drain(self, n: int) -> list[Transcript]:
        """Step until every utterance is out; transcripts of keys 0..n-1 in order."""
        done: dict[Hashable, Transcript] = {}
        while len(self):
            done.update(self.step())
        return [done[i] for i in range(n)]
