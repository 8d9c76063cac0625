"""Loading Whisper weights from CTranslate2, Hugging Face and OpenAI checkpoints into `Whisper`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from .ct2 import ModelFormatError, read_ct2_model
from .dims import WhisperDims
from .formats import detect_format
from .whisper import Whisper

_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


def _count_layers(names: list[str], side: str) -> int:
    found = {int(m.group(2)) for n in names if (m := _LAYER.match(n)) and m.group(1) == side}
    return max(found) + 1 if found else 0


def _ct2_to_openai(v: dict[str, np.ndarray]) -> tuple[WhisperDims, dict[str, np.ndarray]]:
    names = list(v)
    d_audio = v["encoder/conv1/weight"].shape[0]
    d_text = v["decoder/embeddings/weight"].shape[1]
    dims = WhisperDims(
        n_mels=v["encoder/conv1/weight"].shape[1],
        n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=d_audio,
        n_audio_head=int(v["encoder/num_heads"]),
        n_audio_layer=_count_layers(names, "encoder"),
        n_vocab=v["decoder/embeddings/weight"].shape[0],
        n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
        n_text_state=d_text,
        n_text_head=int(v["decoder/num_heads"]),
        n_text_layer=_count_layers(names, "decoder"),
    )
    out: dict[str, np.ndarray] = {}

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = v[f"{src}/gamma"]
        out[f"{dst}.bias"] = v[f"{src}/beta"]

    def linear(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = v[f"{src}/weight"]
        out[f"{dst}.bias"] = v[f"{src}/bias"]

    def fused(src: str, dst: str, parts: tuple[str, ...]) -> None:
        # CTranslate2 fuses projections row-wise; Whisper's key projection has no bias (stored as zeros).
        d = v[f"{src}/weight"].shape[1]
        for i, part in enumerate(parts):
            out[f"{dst}.{part}.weight"] = v[f"{src}/weight"][i * d : (i + 1) * d]
            if part != "key":
                out[f"{dst}.{part}.bias"] = v[f"{src}/bias"][i * d : (i + 1) * d]

    for side in ("encoder", "decoder"):
        for i in range(dims.n_audio_layer if side == "encoder" else dims.n_text_layer):
            s, o = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            norm(f"{s}/self_attention/layer_norm", f"{o}.attn_ln")
            fused(f"{s}/self_attention/linear_0", f"{o}.attn", ("query", "key", "value"))
            linear(f"{s}/self_attention/linear_1", f"{o}.attn.out")
            norm(f"{s}/ffn/layer_norm", f"{o}.mlp_ln")
            linear(f"{s}/ffn/linear_0", f"{o}.mlp.0")
            linear(f"{s}/ffn/linear_1", f"{o}.mlp.2")
            if side == "decoder":
                norm(f"{s}/attention/layer_norm", f"{o}.cross_attn_ln")
                linear(f"{s}/attention/linear_0", f"{o}.cross_attn.query")
                fused(f"{s}/attention/linear_1", f"{o}.cross_attn", ("key", "value"))
                linear(f"{s}/attention/linear_2", f"{o}.cross_attn.out")
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"encoder.{conv}")
    out["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    norm("encoder/layer_norm", "encoder.ln_post")
    out["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    out["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    norm("decoder/layer_norm", "decoder.ln")
    return dims, out


_HF_RENAMES = [
    (r"^model\.encoder\.embed_positions\.weight$", "encoder.positional_embedding"),
    (r"^model\.decoder\.embed_positions\.weight$", "decoder.positional_embedding"),
    (r"^model\.decoder\.embed_tokens\.", "decoder.token_embedding."),
    (r"^model\.encoder\.layer_norm\.", "encoder.ln_post."),
    (r"^model\.decoder\.layer_norm\.", "decoder.ln."),
    (r"^model\.(encoder|decoder)\.layers\.", r"\1.blocks."),
    (r"^model\.encoder\.conv", "encoder.conv"),
    (r"\.self_attn_layer_norm\.", ".attn_ln."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attn_ln."),
    (r"\.final_layer_norm\.", ".mlp_ln."),
    (r"\.self_attn\.", ".attn."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.q_proj\.", ".query."),
    (r"\.k_proj\.", ".key."),
    (r"\.v_proj\.", ".value."),
    (r"\.out_proj\.", ".out."),
    (r"\.fc1\.", ".mlp.0."),
    (r"\.fc2\.", ".mlp.2."),
]


def _hf_to_openai(config: dict, state: dict[str, torch.Tensor]) -> tuple[WhisperDims, dict]:
    dims = WhisperDims(
        n_mels=config["num_mel_bins"],
        n_audio_ctx=config["max_source_positions"],
        n_audio_state=config["d_model"],
        n_audio_head=config["encoder_attention_heads"],
        n_audio_layer=config["encoder_layers"],
        n_vocab=config["vocab_size"],
        n_text_ctx=config["max_target_positions"],
        n_text_state=config["d_model"],
        n_text_head=config["decoder_attention_heads"],
        n_text_layer=config["decoder_layers"],
    )
    out = {}
    for name, tensor in state.items():
        if name == "proj_out.weight":
            continue  # tied to the token embedding
        new = name
        for pattern, repl in _HF_RENAMES:
            new = re.sub(pattern, repl, new)
        out[new] = tensor
    return dims, out


def load_whisper(source: Path) -> Whisper:
    """Build a float32 `Whisper` from a CTranslate2 dir, a Hugging Face dir or an OpenAI .pt file."""
    fmt = detect_format(source)
    if fmt == "prepared":
        raise ModelFormatError(f"{source}: a prepared model holds converted graphs, not weights to load")
    if fmt == "ct2":
        dims, state = _ct2_to_openai(read_ct2_model(source / "model.bin"))
    elif fmt == "hf":
        config = json.loads((source / "config.json").read_text())
        if (source / "model.safetensors").exists():
            from safetensors.torch import load_file

            raw = load_file(str(source / "model.safetensors"))
        else:
            raw = torch.load(source / "pytorch_model.bin", map_location="cpu", weights_only=True)
        dims, state = _hf_to_openai(config, raw)
    else:
        ckpt = torch.load(source, map_location="cpu", weights_only=True)
        dims, state = WhisperDims(**ckpt["dims"]), ckpt["model_state_dict"]
    model = Whisper(dims)
    tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    unexpected = [u for u in unexpected if u != "alignment_heads"]
    if missing or unexpected:
        raise ModelFormatError(
            f"{source}: weights do not match Whisper: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval()
