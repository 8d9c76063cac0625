"""Batched greedy and beam search over a Whisper decoder step, with per-step logit biasing.

One call decodes many utterances together: every decoder step runs once for all live hypotheses of
all utterances in the batch (`running.RunningBatch`, which requests may also join between steps).
Greedy search is beam search with one beam and no alternatives.
"""

from __future__ import annotations

import numpy as np

from ..config import DecodeConfig
from ..engines.base import Engine
from ..models.registry import SuppressConfig
from ..tokenizer import WhisperTokenizer
from .requests import NEG_INF, DecodeRequest, DecodeResult, Hyp, SharedTail, log_norm, stack_cross
from .running import RunningBatch

__all__ = ["DecodeRequest", "DecodeResult", "Searcher", "SharedTail"]


class Searcher:
    def __init__(
        self, engine: Engine, tok: WhisperTokenizer, suppress: SuppressConfig, n_text_ctx: int, n_head: int
    ) -> None:
        self.engine = engine
        self.tok = tok
        self.n_text_ctx = n_text_ctx
        self.n_head = n_head
        n_vocab = tok.n_vocab
        self.suppress_mask = np.zeros(n_vocab, dtype=np.float32)
        self.suppress_mask[list(suppress.always)] = NEG_INF
        self.suppress_mask[tok.special.timestamp_begin :] = NEG_INF  # text only
        self.begin_mask = self.suppress_mask.copy()
        self.begin_mask[list(suppress.at_begin)] = NEG_INF

    def shared(self, tail: SharedTail | None, n_layer: int, d: int) -> tuple[np.ndarray, np.ndarray]:
        """The shared tail's inputs to a step; without one, a single position every row masks out."""
        if tail is None:
            none = np.zeros((n_layer, 1, d), np.float32)
            tail = SharedTail.of(none, none, self.n_head)
        return tail.kt, tail.v

    def prefix(self, req: DecodeRequest) -> list[int]:
        s = self.tok.special
        if not req.prompt:
            return [s.sot]
        # The prompt is bounded like Whisper's: at most half the text context, newest tokens kept.
        return [s.sot_prev, *req.prompt[-(self.n_text_ctx // 2 - 1) :], s.sot]

    def decode(
        self, reqs: list[DecodeRequest], cfg: DecodeConfig, tail: SharedTail | None = None
    ) -> list[DecodeResult]:
        """All of `reqs` decoded together from the first step; results in order."""
        batch = RunningBatch(self, cfg, tail)
        batch.admit(list(enumerate(reqs)))
        results: dict[object, DecodeResult] = {}
        while len(batch):
            results.update(batch.step())
        return [results[i] for i in range(len(reqs))]

    def compare(
        self,
        req: DecodeRequest,
        base: list[int],
        others: list[list[int]],
        cfg: DecodeConfig,
        tail: SharedTail | None = None,
        after: int = 1,
    ) -> list[float]:
        """How much more likely each of `others` is than `base` as the utterance's transcript (nats of
        log-probability, teacher-forced on the audio; negative when less likely).

        Each text is weighed against `base` only where it differs from it, plus the first `after`
        tokens of the ending both share: the words around a replaced span read the same in both, and
        running every text's whole ending through the decoder would cost several times more. With no
        shared ending (beyond `after` tokens) the figure is the exact log-probability ratio.
        """
        if not others:
            return []
        s = self.tok.special
        text = [*base, s.eot]
        windows: list[tuple[int, int, list[int]]] = []  # (start, end in `text`, tokens of the other text)
        for other in others:
            seq = [*other, s.eot]
            start = 0
            while start < min(len(text), len(seq)) and text[start] == seq[start]:
                start += 1
            same = 0  # shared ending; each window keeps at least one token of its own
            while same < min(len(text), len(seq)) - start - 1 and text[-1 - same] == seq[-1 - same]:
                same += 1
            cut = max(0, same - after)
            windows.append((start, len(text) - cut, seq[start : len(seq) - cut]))

        # 1. The prompt, start sequence and `base` in one pass: its logits give every token of `base`
        # (and its end) their log-probability, and its cache is where every other text branches off.
        head = [*self.prefix(req), *self.tok.sot_sequence(cfg.language)[1:]]
        h, p = len(head), len(head) + len(base)
        n_layer, _, d = req.cross_k.shape
        cross_k, cross_v, cross_bias, tail_bias = stack_cross([req], tail)
        shared = self.shared(tail, n_layer, d)
        empty = np.zeros((n_layer, 1, 0, d), dtype=np.float32)
        causal = np.where(np.tril(np.ones((p, p), dtype=bool)), 0.0, NEG_INF).astype(np.float32)[None]
        logits, kk, vv = self.engine.decode(
            np.array([head + base], dtype=np.int64),
            np.arange(p, dtype=np.int64)[None],
            causal,
            empty,
            empty,
            cross_k,
            cross_v,
            cross_bias,
            *shared,
            tail_bias,
            np.arange(h - 1, p, dtype=np.int64),  # row i predicts text[i]
        )
        said = logits[0] + self.suppress_mask
        said_norm = log_norm(said)
        base_lp = said[np.arange(len(text)), text] - said_norm
        # The first token of each window is read from the same logits as base's token there.
        diffs = [float(said[a, w[0]] - said_norm[a] - base_lp[a:b].sum()) if w else 0.0 for a, b, w in windows]

        # 2. The rest of every window, each continuing base's cache where it branches off (longer
        # cached positions are masked per row); short windows are right-padded with end tokens whose
        # outputs are never read.
        rows = [r for r, (_, _, w) in enumerate(windows) if len(w) > 1]
        if not rows:
            return diffs
        width = max(len(windows[r][2]) for r in rows) - 1
        tokens = np.full((len(rows), width), s.eot, dtype=np.int64)
        positions = np.zeros((len(rows), width), dtype=np.int64)
        self_bias = np.full((len(rows), width, p + width), NEG_INF, dtype=np.float32)
        within = np.where(np.tril(np.ones((width, width), dtype=bool)), 0.0, NEG_INF).astype(np.float32)
        for i, r in enumerate(rows):
            a, _, w = windows[r]
            tokens[i, : len(w) - 1] = w[:-1]
            positions[i] = np.arange(h + a, h + a + width)
            self_bias[i, :, : h + a] = 0.0
            self_bias[i, :, p:] = within
        n = len(rows)
        logits, _, _ = self.engine.decode(
            tokens,
            positions,
            self_bias,
            np.repeat(kk, n, axis=1),
            np.repeat(vv, n, axis=1),
            np.repeat(cross_k, n, axis=1),
            np.repeat(cross_v, n, axis=1),
            np.repeat(cross_bias, n, axis=0),
            *shared,
            np.repeat(tail_bias, n, axis=0),
            np.arange(width, dtype=np.int64),
        )
        logits += self.suppress_mask
        norm = log_norm(logits)
        for i, r in enumerate(rows):
            w = windows[r][2]
            diffs[r] += float(sum(logits[i, j, w[j + 1]] - norm[i, j] for j in range(len(w) - 1)))
        return diffs

    @staticmethod
    def rank(h: Hyp, cfg: DecodeConfig) -> float:
        length = max(len(h.tokens), 1)
        penalty = length if cfg.length_penalty is None else ((5 + length) / 6) ** cfg.length_penalty
        return h.score / penalty
