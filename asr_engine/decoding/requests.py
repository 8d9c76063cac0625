"""What a decode reads and returns, and the pieces both searches (free and teacher-forced) share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .bias import BiasState

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
class Hyp:
    tokens: list[int]
    logprobs: list[float]
    score: float  # sum of logprobs + bias corrections
    bias: BiasState | None
    bias_score: float = 0.0
    end_logprob: float | None = None


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    y = x - m
    return y - np.log(np.exp(y).sum(axis=-1, keepdims=True))


def log_norm(x: np.ndarray) -> np.ndarray:
    """log(sum(exp(x))) over the last axis: what `log_softmax` subtracts, for reading a few entries."""
    m = x.max(axis=-1)
    return m + np.log(np.exp(x - m[..., None]).sum(axis=-1))


def last(n: int) -> np.ndarray:
    return np.array([n - 1], dtype=np.int64)


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


def stack_cross(reqs: list[DecodeRequest], tail: SharedTail | None):
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
