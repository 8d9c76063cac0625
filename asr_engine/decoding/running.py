"""A running batch: requests join between decoder steps and leave as soon as their search ends.

`admit` runs the newcomers' prompt and start sequence and merges their rows into the batch; `step`
picks every live hypothesis's next token (greedy or beam), returns the requests whose search ended,
and runs one decoder step for the rows left. Rows of different lengths share the step's arrays:
self-attention caches are right-padded with masked columns (a row's positions travel with it, so a
column's index means nothing to it), encoder outputs are padded to the longest and masked, and columns
or encoder positions no live row reads any more are dropped when rows leave.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..config import DecodeConfig
from .bias import BiasState
from .guards import max_new_tokens, repeated_tail
from .requests import NEG_INF, DecodeRequest, DecodeResult, Hyp, SharedTail, last, log_softmax, stack_cross

if TYPE_CHECKING:
    from .search import Searcher

_LAST1 = last(1)


@dataclass(eq=False)
class _Entry:
    """One request's search: its live hypotheses own consecutive rows of the batch, in entry order."""

    key: Hashable
    req: DecodeRequest
    budget: int
    no_speech: float
    beams: list[Hyp]
    finished: list[Hyp]
    first: bool = True  # its next token is the first of the text

    @property
    def cross_len(self) -> int:
        return self.req.cross_k.shape[1]


@dataclass
class _Rows:
    """The step's inputs, one row per live hypothesis."""

    kk: np.ndarray  # [L, R, T, d] self-attention cache
    vv: np.ndarray
    key_ok: np.ndarray  # [R, T] which cache columns a row attends to
    cross_k: np.ndarray  # [L, R, S, d]
    cross_v: np.ndarray
    cross_bias: np.ndarray  # [R, 1, S]
    tail_bias: np.ndarray  # [R, 1, tail positions]
    next_pos: np.ndarray  # [R] position of a row's next token
    logits: np.ndarray  # [R, V] to pick a row's next token from
    owner: list[_Entry]

    def take(self, idx: np.ndarray, owner: list[_Entry]) -> _Rows:
        """Rows `idx` (owned by `owner`); cache columns and encoder positions nobody reads are dropped.
        Hypotheses of one request share its encoder output: it is gathered only when the set changes."""
        key_ok = self.key_ok[idx]
        used = key_ok.any(axis=0)
        kk, vv = self.kk, self.vv
        if not used.all():
            cols = np.flatnonzero(used)
            kk, vv, key_ok = kk[:, :, cols], vv[:, :, cols], key_ok[:, cols]
        if not (len(idx) == kk.shape[1] and (idx == np.arange(len(idx))).all()):
            kk, vv = kk[:, idx], vv[:, idx]
        cross_k, cross_v, cross_bias, tail_bias = self.cross_k, self.cross_v, self.cross_bias, self.tail_bias
        if owner != self.owner:
            s = max(e.cross_len for e in owner)
            cross_k, cross_v = cross_k[:, idx, :s], cross_v[:, idx, :s]
            cross_bias, tail_bias = cross_bias[idx, :, :s], tail_bias[idx]
        return _Rows(
            kk, vv, key_ok, cross_k, cross_v, cross_bias, tail_bias, self.next_pos[idx], self.logits[idx], owner
        )

    def merged(self, other: _Rows) -> _Rows:
        """These rows, then `other`'s, padded to the same cache columns and encoder positions."""
        t = max(self.kk.shape[2], other.kk.shape[2])
        s = max(self.cross_k.shape[2], other.cross_k.shape[2])
        a, b = self.padded(t, s), other.padded(t, s)
        return _Rows(
            np.concatenate([a.kk, b.kk], axis=1),
            np.concatenate([a.vv, b.vv], axis=1),
            np.concatenate([a.key_ok, b.key_ok]),
            np.concatenate([a.cross_k, b.cross_k], axis=1),
            np.concatenate([a.cross_v, b.cross_v], axis=1),
            np.concatenate([a.cross_bias, b.cross_bias]),
            np.concatenate([a.tail_bias, b.tail_bias]),
            np.concatenate([a.next_pos, b.next_pos]),
            np.concatenate([a.logits, b.logits]),
            [*a.owner, *b.owner],
        )

    def padded(self, t: int, s: int) -> _Rows:
        return _Rows(
            _pad(self.kk, 2, t, 0.0),
            _pad(self.vv, 2, t, 0.0),
            _pad(self.key_ok, 1, t, False),
            _pad(self.cross_k, 2, s, 0.0),
            _pad(self.cross_v, 2, s, 0.0),
            _pad(self.cross_bias, 2, s, NEG_INF),
            self.tail_bias,
            self.next_pos,
            self.logits,
            self.owner,
        )


def _pad(a: np.ndarray, axis: int, n: int, value: float | bool) -> np.ndarray:
    if a.shape[axis] >= n:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, n - a.shape[axis])
    return np.pad(a, widths, constant_values=value)


class RunningBatch:
    """The search of many requests, each joining and leaving between steps; results by request key."""

    def __init__(self, searcher: Searcher, cfg: DecodeConfig, tail: SharedTail | None = None) -> None:
        self.searcher = searcher
        self.cfg = cfg
        self.tail = tail
        self._rows: _Rows | None = None
        self._entries: list[_Entry] = []

    def __len__(self) -> int:
        """Requests in the batch."""
        return len(self._entries)

    @property
    def rows(self) -> int:
        """Live hypotheses (rows of a step)."""
        return 0 if self._rows is None else len(self._rows.owner)

    def admit(self, items: Sequence[tuple[Hashable, DecodeRequest]]) -> None:
        """Start the search of `items` (key, request): their prompt and start sequence are decoded now,
        and their first token is picked at the next `step`, beside the rows already running."""
        if not items:
            return
        known = {e.key for e in self._entries}
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys) or known.intersection(keys):
            raise ValueError("a request key is already in the batch")
        rows, entries = self._start([r for _, r in items], keys)
        # Merged only once everything above has run: a failed admission leaves the batch as it was.
        self._rows = rows if self._rows is None else self._rows.merged(rows)
        self._entries.extend(entries)

    def cancel(self, key: Hashable) -> bool:
        """Drop a request's rows; False if it is not in the batch."""
        entry = next((e for e in self._entries if e.key == key), None)
        if entry is None:
            return False
        self._entries.remove(entry)
        assert self._rows is not None
        keep = [i for i, e in enumerate(self._rows.owner) if e is not entry]
        # The last request's rows leave nothing to take (its encoder columns sized by no one).
        self._rows = (
            self._rows.take(np.array(keep, dtype=np.int64), [self._rows.owner[i] for i in keep]) if keep else None
        )
        return True

    def _start(self, reqs: list[DecodeRequest], keys: list[Hashable]) -> tuple[_Rows, list[_Entry]]:
        searcher, cfg, tail = self.searcher, self.cfg, self.tail
        e = searcher.engine
        s = searcher.tok.special
        n_layer = reqs[0].cross_k.shape[0]
        d = reqs[0].cross_k.shape[2]

        # 1. Prefix up to <|startoftranscript|>, left-padded: its last logits give P(no speech).
        prefixes = [searcher.prefix(r) for r in reqs]
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
        cross_k, cross_v, cross_bias, tail_bias = stack_cross(reqs, tail)
        shared = searcher.shared(tail, n_layer, d)
        empty = np.zeros((n_layer, B, 0, d), dtype=np.float32)
        logits, kk, vv = e.decode(
            tokens, positions, self_bias, empty, empty, cross_k, cross_v, cross_bias, *shared, tail_bias, last(width)
        )
        logits = logits[:, 0]
        no_speech = np.exp(log_softmax(logits)[:, s.no_speech])

        # 2. The rest of the start sequence (language, task, no timestamps): same for every row.
        rest = searcher.tok.sot_sequence(cfg.language)[1:]
        n = len(rest)
        step_tokens = np.tile(np.array(rest, dtype=np.int64), (B, 1))
        step_pos = np.array([[len(p) + i for i in range(n)] for p in prefixes], dtype=np.int64)
        key_ok = np.concatenate([key_ok, np.ones((B, n), dtype=bool)], axis=1)
        causal = np.tril(np.ones((n, n), dtype=bool))
        allowed = np.concatenate([np.repeat(key_ok[:, None, :width], n, axis=1), np.repeat(causal[None], B, 0)], 2)
        self_bias = np.where(allowed, 0.0, NEG_INF).astype(np.float32)
        logits, kk, vv = e.decode(
            step_tokens, step_pos, self_bias, kk, vv, cross_k, cross_v, cross_bias, *shared, tail_bias, last(n)
        )
        room = searcher.n_text_ctx // 2 - n  # text context left after the start sequence, less the prompt's
        entries = [
            _Entry(
                key,
                r,
                max_new_tokens(r.seconds, cfg.max_tokens_per_second, cfg.min_tokens, room - len(p)),
                float(ns),
                [Hyp([], [], 0.0, r.bias)],
                [],
            )
            for key, r, p, ns in zip(keys, reqs, prefixes, no_speech, strict=True)
        ]
        rows = _Rows(
            kk, vv, key_ok, cross_k, cross_v, cross_bias, tail_bias, step_pos[:, -1] + 1, logits[:, 0], entries
        )
        return rows, entries

    def step(self) -> list[tuple[Hashable, DecodeResult]]:
        """Pick every hypothesis's next token; the requests whose search ended, with their results; then
        one decoder step for the rows that go on."""
        if self._rows is None:
            return []
        searcher, cfg = self.searcher, self.cfg
        eot = searcher.tok.special.eot
        K = cfg.beam_size
        rows = self._rows
        x = rows.logits + searcher.suppress_mask
        first = np.array([e.first for e in rows.owner])
        if first.any():
            x[first] = rows.logits[first] + searcher.begin_mask
        scores = log_softmax(x)
        new_rows: list[int] = []  # source row of every surviving hypothesis
        new_tokens: list[int] = []
        new_owner: list[_Entry] = []
        ended: list[_Entry] = []
        row = 0
        for entry in self._entries:
            entry.first = False
            cands: list[tuple[float, int, int, float, BiasState | None, float]] = []
            for j, hyp in enumerate(entry.beams):
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
            row += len(entry.beams)
            cands.sort(key=lambda c: -c[0])
            kept: list[Hyp] = []
            picked: list[tuple[int, int]] = []  # (source row, token) of each kept hypothesis
            for total, j, t, gain, nb, extra in cands:
                src = entry.beams[j]
                if t == eot:
                    if len(entry.finished) < K:
                        entry.finished.append(Hyp(src.tokens, src.logprobs, total - gain, nb, src.bias_score, gain))
                    continue
                hyp = Hyp([*src.tokens, t], [*src.logprobs, gain], total, nb, src.bias_score + extra)
                cut = repeated_tail(hyp.tokens, cfg.max_repeats)
                if cut is not None or len(hyp.tokens) >= entry.budget:
                    if cut is not None:
                        hyp = Hyp(hyp.tokens[:cut], hyp.logprobs[:cut], sum(hyp.logprobs[:cut]), nb, hyp.bias_score)
                    if len(entry.finished) < K:
                        entry.finished.append(hyp)
                    continue
                kept.append(hyp)
                picked.append((row_base + j, t))
                if len(kept) == K:
                    break
            if len(entry.finished) >= K or not kept:
                entry.beams = []
                ended.append(entry)
                continue
            entry.beams = kept
            for src_row, t in picked:
                new_rows.append(src_row)
                new_tokens.append(t)
                new_owner.append(entry)

        results = [(e.key, self._result(e)) for e in ended]
        self._entries = [e for e in self._entries if e.beams]
        if not new_rows:
            self._rows = None
            return results
        rows = rows.take(np.array(new_rows, dtype=np.int64), new_owner)
        n_layer, _, _, d = rows.cross_k.shape
        key_ok = np.concatenate([rows.key_ok, np.ones((len(new_rows), 1), dtype=bool)], axis=1)
        self_bias = np.where(key_ok, 0.0, NEG_INF).astype(np.float32)[:, None, :]
        logits, kk, vv = searcher.engine.decode(
            np.array(new_tokens, dtype=np.int64)[:, None],
            rows.next_pos[:, None],
            self_bias,
            rows.kk,
            rows.vv,
            rows.cross_k,
            rows.cross_v,
            rows.cross_bias,
            *searcher.shared(self.tail, n_layer, d),
            rows.tail_bias,
            _LAST1,
        )
        self._rows = _Rows(
            kk,
            vv,
            key_ok,
            rows.cross_k,
            rows.cross_v,
            rows.cross_bias,
            rows.tail_bias,
            rows.next_pos + 1,
            logits[:, 0],
            new_owner,
        )
        return results

    def _result(self, entry: _Entry) -> DecodeResult:
        pool = entry.finished
        best = max(pool, key=lambda h: self.searcher.rank(h, self.cfg)) if pool else Hyp([], [], 0.0, None)
        avg = float(np.mean(best.logprobs)) if best.logprobs else 0.0
        return DecodeResult(best.tokens, best.logprobs, avg, entry.no_speech, best.bias_score, best.end_logprob)
