"""Batched greedy and beam search over a Whisper decoder step, with per-step logit biasing.

One call decodes many utterances together: every decoder step runs once for all live hypotheses of
all utterances in the batch. Greedy search is beam search with one beam and no alternatives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import DecodeConfig
from ..engines.base import Engine
from ..models.registry import SuppressConfig
from ..tokenizer import WhisperTokenizer
from .bias import BiasState
from .guards import max_new_tokens, repeated_tail

NEG_INF = np.float32(-1e9)


@dataclass
class DecodeRequest:
    cross_k: np.ndarray  # [L, S, d]
    cross_v: np.ndarray
    seconds: float
    prompt: list[int] = field(default_factory=list)  # previous-text tokens (without <|startofprev|>)
    bias: BiasState | None = None


@dataclass
class DecodeResult:
    tokens: list[int]
    token_logprobs: list[float]
    avg_logprob: float
    no_speech_prob: float
    bias_score: float = 0.0
    end_logprob: float | None = None  # of the end token, when the decode ended on it


@dataclass
class _Hyp:
    tokens: list[int]
    logprobs: list[float]
    score: float  # sum of logprobs + bias corrections
    bias: BiasState | None
    bias_score: float = 0.0
    end_logprob: float | None = None


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    y = x - m
    return y - np.log(np.exp(y).sum(axis=-1, keepdims=True))


def _log_norm(x: np.ndarray) -> np.ndarray:
    """log(sum(exp(x))) over the last axis: what `_log_softmax` subtracts, for reading a few entries."""
    m = x.max(axis=-1)
    return m + np.log(np.exp(x - m[..., None]).sum(axis=-1))


def _last(n: int) -> np.ndarray:
    return np.array([n - 1], dtype=np.int64)


_LAST1 = _last(1)


@dataclass(frozen=True)
class SharedTail:
    """Encoder positions every row of a batch reads (the silence after speech), split into heads as
    the decoder step reads them: keys transposed [L, h, dh, T], values [L, h, T, dh]."""

    kt: np.ndarray
    v: np.ndarray

    @classmethod
    def of(cls, k: np.ndarray, v: np.ndarray, n_head: int) -> SharedTail:
        """From the encoder's layout, keys and values [L, T, d]."""
        n_layer, t, d = k.shape
        heads = (n_layer, t, n_head, d // n_head)
        kt = np.ascontiguousarray(k.reshape(heads).transpose(0, 2, 3, 1))
        return cls(kt, np.ascontiguousarray(v.reshape(heads).transpose(0, 2, 1, 3)))

    @property
    def positions(self) -> int:
        return self.v.shape[2]


def _stack_cross(reqs: list[DecodeRequest], tail: SharedTail | None):
    """Each row's own cross K/V padded to the longest and masked; the mask of the shared tail."""
    s_max = max(r.cross_k.shape[1] for r in reqs)
    L, _, d = reqs[0].cross_k.shape
    rows = len(reqs)
    k = np.zeros((L, rows, s_max, d), dtype=np.float32)
    v = np.zeros_like(k)
    bias = np.zeros((rows, 1, s_max), dtype=np.float32)
    t_len = tail.positions if tail is not None else 1
    tail_bias = np.full((rows, 1, t_len), NEG_INF, dtype=np.float32)
    for row, r in enumerate(reqs):
        s = r.cross_k.shape[1]
        k[:, row, :s] = r.cross_k
        v[:, row, :s] = r.cross_v
        bias[row, :, s:] = NEG_INF
        if tail is not None:
            tail_bias[row, :, s:] = 0.0  # the row's own encoding covers positions before s
    return k, v, bias, tail_bias


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

    def _shared(self, tail: SharedTail | None, n_layer: int, d: int) -> tuple[np.ndarray, np.ndarray]:
        """The shared tail's inputs to a step; without one, a single position every row masks out."""
        if tail is None:
            none = np.zeros((n_layer, 1, d), np.float32)
            tail = SharedTail.of(none, none, self.n_head)
        return tail.kt, tail.v

    def _prefix(self, req: DecodeRequest) -> list[int]:
        s = self.tok.special
        if not req.prompt:
            return [s.sot]
        # The prompt is bounded like Whisper's: at most half the text context, newest tokens kept.
        return [s.sot_prev, *req.prompt[-(self.n_text_ctx // 2 - 1) :], s.sot]

    def decode(
        self, reqs: list[DecodeRequest], cfg: DecodeConfig, tail: SharedTail | None = None
    ) -> list[DecodeResult]:
        if not reqs:
            return []
        e = self.engine
        s = self.tok.special
        n_layer = reqs[0].cross_k.shape[0]
        d = reqs[0].cross_k.shape[2]

        # 1. Prefix up to <|startoftranscript|>, left-padded: its last logits give P(no speech).
        prefixes = [self._prefix(r) for r in reqs]
        width = max(len(p) for p in prefixes)
        B = len(reqs)
        tokens = np.full((B, width), s.eot, dtype=np.int64)
        positions = np.zeros((B, width), dtype=np.int64)
        key_ok = np.zeros((B, width), dtype=bool)
        for b, p in enumerate(prefixes):
            pad = width - len(p)
            tokens[b, pad:] = p
            positions[b, pad:] = np.arange(len(p))
            key_ok[b, pad:] = True
        causal = np.tril(np.ones((width, width), dtype=bool))
        allowed = causal[None] & key_ok[:, None, :]
        allowed |= np.eye(width, dtype=bool)[None]  # padding rows attend to themselves: no NaN
        self_bias = np.where(allowed, 0.0, NEG_INF).astype(np.float32)
        cross_k, cross_v, cross_bias, tail_bias = _stack_cross(reqs, tail)
        shared = self._shared(tail, n_layer, d)
        empty = np.zeros((n_layer, B, 0, d), dtype=np.float32)
        logits, kk, vv = e.decode(
            tokens, positions, self_bias, empty, empty, cross_k, cross_v, cross_bias, *shared, tail_bias, _last(width)
        )
        logits = logits[:, 0]
        no_speech = np.exp(_log_softmax(logits)[:, s.no_speech])

        # 2. The rest of the start sequence (language, task, no timestamps): same for every row.
        rest = self.tok.sot_sequence(cfg.language)[1:]
        n = len(rest)
        step_tokens = np.tile(np.array(rest, dtype=np.int64), (B, 1))
        step_pos = np.array([[len(p) + i for i in range(n)] for p in prefixes], dtype=np.int64)
        key_ok = np.concatenate([key_ok, np.ones((B, n), dtype=bool)], axis=1)
        causal = np.tril(np.ones((n, n), dtype=bool))
        allowed = np.concatenate([np.repeat(key_ok[:, None, :width], n, axis=1), np.repeat(causal[None], B, 0)], 2)
        self_bias = np.where(allowed, 0.0, NEG_INF).astype(np.float32)
        logits, kk, vv = e.decode(
            step_tokens, step_pos, self_bias, kk, vv, cross_k, cross_v, cross_bias, *shared, tail_bias, _last(n)
        )
        logits = logits[:, 0]
        next_pos = step_pos[:, -1] + 1

        # 3. Search. Row r of the running batch belongs to request owner[r].
        K = cfg.beam_size
        budgets = [
            max_new_tokens(r.seconds, cfg.max_tokens_per_second, cfg.min_tokens, self.n_text_ctx // 2 - len(p) - n)
            for r, p in zip(reqs, prefixes, strict=True)
        ]
        beams: list[list[_Hyp]] = [[_Hyp([], [], 0.0, r.bias)] for r in reqs]
        finished: list[list[_Hyp]] = [[] for _ in reqs]
        done = [False] * B
        owner = list(range(B))
        step = 0
        while True:
            scores = _log_softmax(logits + (self.begin_mask if step == 0 else self.suppress_mask))
            new_rows: list[int] = []  # source row of every surviving hypothesis
            new_tokens: list[int] = []
            row = 0
            for b in range(B):
                if done[b]:
                    continue
                cands: list[tuple[float, int, int, float, BiasState | None, float]] = []
                for j, hyp in enumerate(beams[b]):
                    lp = scores[row + j]
                    boosted = lp
                    if hyp.bias is not None and (boosts := hyp.bias.boosts()):
                        boosted = lp.copy()
                        ids = np.fromiter(boosts.keys(), dtype=np.int64, count=len(boosts))
                        boosted[ids] += np.fromiter(boosts.values(), dtype=np.float32, count=len(boosts))
                    top = np.argpartition(-boosted, K)[: K + 1] if K > 1 else [int(np.argmax(boosted))]
                    for t in top:
                        t = int(t)
                        gain, nb = float(lp[t]), hyp.bias
                        extra = 0.0
                        if nb is not None:
                            nb, corr = nb.advance(t)
                            extra = float(boosted[t] - lp[t]) + corr
                        cands.append((hyp.score + gain + extra, j, t, gain, nb, extra))
                row_base = row
                row += len(beams[b])
                cands.sort(key=lambda c: -c[0])
                kept: list[_Hyp] = []
                for total, j, t, gain, nb, extra in cands:
                    src = beams[b][j]
                    if t == s.eot:
                        if len(finished[b]) < K:
                            finished[b].append(_Hyp(src.tokens, src.logprobs, total - gain, nb, src.bias_score, gain))
                        continue
                    hyp = _Hyp([*src.tokens, t], [*src.logprobs, gain], total, nb, src.bias_score + extra)
                    cut = repeated_tail(hyp.tokens, cfg.max_repeats)
                    if cut is not None or len(hyp.tokens) >= budgets[b]:
                        if cut is not None:
                            hyp = _Hyp(
                                hyp.tokens[:cut], hyp.logprobs[:cut], sum(hyp.logprobs[:cut]), nb, hyp.bias_score
                            )
                        if len(finished[b]) < K:
                            finished[b].append(hyp)
                        continue
                    kept.append(hyp)
                    new_rows.append(row_base + j)
                    new_tokens.append(t)
                    if len(kept) == K:
                        break
                if len(finished[b]) >= K or not kept:
                    done[b] = True
                    del new_rows[len(new_rows) - len(kept) :]
                    del new_tokens[len(new_tokens) - len(kept) :]
                    kept = []
                beams[b] = kept
            if not new_rows:
                break
            idx = np.array(new_rows, dtype=np.int64)
            if not (len(idx) == kk.shape[1] and (idx == np.arange(len(idx))).all()):
                kk, vv = kk[:, idx], vv[:, idx]
            new_owner = [owner[i] for i in new_rows]
            if new_owner != owner:
                # Rows of one utterance share its encoder output: gather only when the row set changes.
                cross_k, cross_v, cross_bias = cross_k[:, idx], cross_v[:, idx], cross_bias[idx]
                tail_bias = tail_bias[idx]
                owner = new_owner
            key_ok = key_ok[idx]
            pos = next_pos[idx]
            key_ok = np.concatenate([key_ok, np.ones((len(idx), 1), dtype=bool)], axis=1)
            self_bias = np.where(key_ok, 0.0, NEG_INF).astype(np.float32)[:, None, :]
            logits, kk, vv = e.decode(
                np.array(new_tokens, dtype=np.int64)[:, None],
                pos[:, None],
                self_bias,
                kk,
                vv,
                cross_k,
                cross_v,
                cross_bias,
                *shared,
                tail_bias,
                _LAST1,
            )
            logits = logits[:, 0]
            next_pos = pos + 1
            step += 1

        results = []
        for b in range(B):
            pool = finished[b] or beams[b]
            best = max(pool, key=lambda h: self._rank(h, cfg)) if pool else _Hyp([], [], 0.0, None)
            avg = float(np.mean(best.logprobs)) if best.logprobs else 0.0
            results.append(
                DecodeResult(best.tokens, best.logprobs, avg, float(no_speech[b]), best.bias_score, best.end_logprob)
            )
        return results

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
        head = [*self._prefix(req), *self.tok.sot_sequence(cfg.language)[1:]]
        h, p = len(head), len(head) + len(base)
        n_layer, _, d = req.cross_k.shape
        cross_k, cross_v, cross_bias, tail_bias = _stack_cross([req], tail)
        shared = self._shared(tail, n_layer, d)
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
        said_norm = _log_norm(said)
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
        norm = _log_norm(logits)
        for i, r in enumerate(rows):
            w = windows[r][2]
            diffs[r] += float(sum(logits[i, j, w[j + 1]] - norm[i, j] for j in range(len(w) - 1)))
        return diffs

    @staticmethod
    def _rank(h: _Hyp, cfg: DecodeConfig) -> float:
        length = max(len(h.tokens), 1)
        penalty = length if cfg.length_penalty is None else ((5 + length) / 6) ** cfg.length_penalty
        return h.score / penalty
