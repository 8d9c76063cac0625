"""Converted models on disk: which files each runtime needs, the cache key of a checkpoint's conversion,
and the exported decoder step's inputs. Reading all this needs no torch: only converting does (`export.py`).

Artifacts live under `<cache>/<key>/`, where the key hashes the checkpoint's bytes and the export format
version, so a changed model or exporter never reuses a stale conversion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import EngineConfig
from .formats import detect_format

EXPORT_VERSION = "4"

ARTIFACTS = {
    "onnx": ["encoder.onnx", "decoder.onnx"],
    "onnx-int8": ["encoder.int8.onnx", "decoder.int8.onnx"],
    "torchscript": ["encoder.ts", "decoder.ts"],
}


def kinds_for(config: EngineConfig) -> list[str]:
    """The artifact kinds an engine config runs (int8 weights help only the CPU kernels)."""
    if config.kind == "torchscript":
        return ["torchscript"]
    parts = config.int8_parts()
    if not parts:
        return ["onnx"]
    # A mixed choice runs one part of each kind; both are prepared (kinds are converted whole).
    return ["onnx-int8"] if len(parts) == 2 else ["onnx", "onnx-int8"]


def run_files(config: EngineConfig) -> list[str]:
    """The graph files an engine config loads: per part, int8 where `int8_parts` says, else fp32."""
    if config.kind == "torchscript":
        return list(ARTIFACTS["torchscript"])
    parts = config.int8_parts()
    return [f"{p}.int8.onnx" if p in parts else f"{p}.onnx" for p in ("encoder", "decoder")]


def missing_kinds(artifacts: Path, kinds: Sequence[str]) -> list[str]:
    return [k for k in kinds if not all((artifacts / f).exists() for f in ARTIFACTS[k])]


def source_files(source: Path) -> list[Path]:
    fmt = detect_format(source)
    if fmt == "openai":
        return [source]
    names = {"ct2": ["model.bin", "config.json"], "hf": ["model.safetensors", "pytorch_model.bin", "config.json"]}
    return [source / n for n in names[fmt] if (source / n).exists()]


def source_hash(source: Path) -> str:
    h = hashlib.sha256(EXPORT_VERSION.encode())
    for f in source_files(source):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:24]


def decoder_input_names(n_layer: int) -> list[str]:
    return [
        "tokens",
        "positions",
        "self_bias",
        "self_k",
        "self_v",
        "cross_k",
        "cross_v",
        "cross_bias",
        *(f"tail_kt_{i}" for i in range(n_layer)),
        *(f"tail_v_{i}" for i in range(n_layer)),
        "tail_bias",
        "logit_positions",
    ]


def decoder_feed(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """`Engine.decode`'s inputs as the exported step takes them: the stacked shared tail [L, ...]
    becomes one array per layer (views, no copy)."""
    return [*inputs[:8], *inputs[8], *inputs[9], *inputs[10:]]


DECODER_OUTPUTS = ["logits", "new_self_k", "new_self_v"]
