"""Whisper as a PyTorch module shaped for export: encoder, cross-attention K/V, and one decoder step
over an explicit self-attention cache.

Parameter names follow OpenAI's reference implementation so that its checkpoints load as they are;
CTranslate2 and Hugging Face checkpoints are mapped onto them in `checkpoints.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dims import WhisperDims


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.n_head, d // self.n_head).transpose(1, 2)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
        b, nq, d = q.shape
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        w = (q @ k.transpose(-1, -2)) * ((d // self.n_head) ** -0.5)
        if bias is not None:
            w = w + bias.unsqueeze(1)
        out = torch.softmax(w.float(), dim=-1).to(q.dtype) @ v
        return self.out(out.transpose(1, 2).reshape(b, nq, d))

    def attend_with_tail(
        self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, tail_kt: Tensor, tail_v: Tensor, tail_bias: Tensor
    ) -> Tensor:
        """Attention over each row's own keys [B, S, d] and keys shared by every row.

        The shared part (the encoding of the silence after the speech) is read once per step for the
        whole batch instead of being copied into every row, and arrives already split into heads as
        the products read it, keys transposed ([h, dh, T]) and values [h, T, dh]: a step then neither
        slices nor transposes the thousand-odd shared positions.
        """
        b, nq, d = q.shape
        dh = d // self.n_head
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        scale = dh**-0.5
        w_own = (q @ k.transpose(-1, -2)) * scale + bias.unsqueeze(1)
        w_tail = torch.matmul(q, tail_kt) * scale + tail_bias.unsqueeze(1)
        p = torch.softmax(torch.cat([w_own, w_tail], dim=-1).float(), dim=-1).to(q.dtype)
        s = k.shape[2]
        out = p[..., :s] @ v + torch.matmul(p[..., s:], tail_v)
        return self.out(out.transpose(1, 2).reshape(b, nq, d))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, cross_attention: bool) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = nn.LayerNorm(n_state) if cross_attention else None
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)


class AudioEncoder(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        d = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.zeros(dims.n_audio_ctx, d))
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(d, dims.n_audio_head, False) for _ in range(dims.n_audio_layer)
        )
        self.ln_post = nn.LayerNorm(d)

    def forward(self, mel: Tensor) -> Tensor:
        """mel [B, n_mels, T] (T even, <= 2 * n_audio_ctx) -> [B, T/2, d].

        The positional embedding is sliced to the input's length, so the encoder can run on an
        utterance instead of a 30 s window.
        """
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        x = x + self.positional_embedding[: x.shape[1]]
        for block in self.blocks:
            h = block.attn_ln(x)
            x = x + block.attn.attend(block.attn.query(h), block.attn.key(h), block.attn.value(h), None)
            x = x + block.mlp(block.mlp_ln(x))
        return self.ln_post(x)


class TextDecoder(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        d = dims.n_text_state
        self.token_embedding = nn.Embedding(dims.n_vocab, d)
        self.positional_embedding = nn.Parameter(torch.zeros(dims.n_text_ctx, d))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(d, dims.n_text_head, True) for _ in range(dims.n_text_layer))
        self.ln = nn.LayerNorm(d)

    def step(
        self,
        tokens: Tensor,
        positions: Tensor,
        self_bias: Tensor,
        self_k: Tensor,
        self_v: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        cross_bias: Tensor,
        tail_kt: Sequence[Tensor],
        tail_v: Sequence[Tensor],
        tail_bias: Tensor,
        logit_positions: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One decoding step for n new tokens per sequence.

        tokens, positions [B, n]; self_bias [B, n, P+n] additive (causal and padding mask);
        self_k/self_v [L, B, P, d] the cache; cross_k/cross_v [L, B, S, d] each row's encoding,
        cross_bias [B, 1, S]; tail_kt/tail_v, a tensor per layer, the encoder positions shared by all
        rows (the silence after the speech) in heads: keys transposed [h, dh, T], values [h, T, dh];
        tail_bias [B, 1, T] masking the ones a row covers itself;
        logit_positions [m]: which of the n new positions to return logits for (the last one while
        searching, all of them when scoring a given text).
        Returns logits [B, m, V] and the grown cache [L, B, P+n, d].
        """
        x = self.token_embedding(tokens) + self.positional_embedding[positions]
        new_k, new_v = [], []
        for i, block in enumerate(self.blocks):
            h = block.attn_ln(x)
            k = torch.cat([self_k[i], block.attn.key(h)], dim=1)
            v = torch.cat([self_v[i], block.attn.value(h)], dim=1)
            new_k.append(k)
            new_v.append(v)
            x = x + block.attn.attend(block.attn.query(h), k, v, self_bias)
            h = block.cross_attn_ln(x)  # type: ignore[misc]
            x = x + block.cross_attn.attend_with_tail(  # type: ignore[union-attr]
                block.cross_attn.query(h),  # type: ignore[union-attr]
                cross_k[i],
                cross_v[i],
                cross_bias,
                tail_kt[i],
                tail_v[i],
                tail_bias,
            )
            x = x + block.mlp(block.mlp_ln(x))
        out = self.ln(x[:, logit_positions])
        # F.linear keeps the tied embedding as one initializer in the exported graph.
        logits = F.linear(out, self.token_embedding.weight)
        return logits, torch.stack(new_k), torch.stack(new_v)


class Whisper(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims)
        self.decoder = TextDecoder(dims)


class EncoderExport(nn.Module):
    """mel -> (cross_k, cross_v): the encoder and every layer's cross-attention projections."""

    def __init__(self, model: Whisper) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.cross = nn.ModuleList(b.cross_attn for b in model.decoder.blocks)

    def forward(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        audio = self.encoder(mel)
        return torch.stack([c.key(audio) for c in self.cross]), torch.stack([c.value(audio) for c in self.cross])


class DecoderExport(nn.Module):
    """One decoder step with the inputs of `TextDecoder.step`, in that order, the shared tail given as
    one input per layer (keys of every layer, then values): a graph input is read where it lies, a
    slice of a stacked one would be copied on every step."""

    def __init__(self, model: Whisper) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.n_layer = model.dims.n_text_layer

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n = self.n_layer
        head, tail_kt, tail_v, rest = inputs[:8], inputs[8 : 8 + n], inputs[8 + n : 8 + 2 * n], inputs[8 + 2 * n :]
        return self.decoder.step(*head, tail_kt, tail_v, *rest)
