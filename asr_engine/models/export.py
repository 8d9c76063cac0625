"""One-time conversion of a Whisper checkpoint to ONNX and TorchScript, cached on disk (PyTorch needed).

Where the artifacts go and how they are keyed is `artifacts.py`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .artifacts import ARTIFACTS, DECODER_OUTPUTS, decoder_input_names, missing_kinds, source_hash
from .checkpoints import load_whisper
from .whisper import DecoderExport, EncoderExport, Whisper

log = logging.getLogger(__name__)

ONNX_OPSET = 17
Progress = Callable[[str], None]


def _example_inputs(model: Whisper, batch: int = 2, frames: int = 200, past: int = 3, new: int = 2):
    d, L = model.dims, model.dims.n_text_layer
    s = frames // 2
    h, dh = d.n_text_head, d.n_text_state // d.n_text_head
    mel = torch.randn(batch, d.n_mels, frames)
    dec = (
        torch.randint(0, d.n_vocab, (batch, new)),
        torch.arange(past, past + new).repeat(batch, 1),
        torch.zeros(batch, new, past + new),
        torch.randn(L, batch, past, d.n_text_state),
        torch.randn(L, batch, past, d.n_text_state),
        torch.randn(L, batch, s, d.n_text_state),
        torch.randn(L, batch, s, d.n_text_state),
        torch.zeros(batch, 1, s),
        *(torch.randn(h, dh, 7) for _ in range(L)),
        *(torch.randn(h, 7, dh) for _ in range(L)),
        torch.zeros(batch, 1, 7),
        torch.tensor([new - 1]),
    )
    return mel, dec


def _export_onnx(model: Whisper, out: Path) -> None:
    mel, dec = _example_inputs(model)
    n_layer = model.dims.n_text_layer
    torch.onnx.export(
        EncoderExport(model),
        (mel,),
        str(out / "encoder.onnx"),
        input_names=["mel"],
        output_names=["cross_k", "cross_v"],
        dynamic_axes={
            "mel": {0: "batch", 2: "frames"},
            "cross_k": {1: "batch", 2: "ctx"},
            "cross_v": {1: "batch", 2: "ctx"},
        },
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    torch.onnx.export(
        DecoderExport(model),
        dec,
        str(out / "decoder.onnx"),
        input_names=decoder_input_names(n_layer),
        output_names=DECODER_OUTPUTS,
        dynamic_axes={
            "tokens": {0: "batch", 1: "new"},
            "positions": {0: "batch", 1: "new"},
            "self_bias": {0: "batch", 1: "new", 2: "total"},
            "self_k": {1: "batch", 2: "past"},
            "self_v": {1: "batch", 2: "past"},
            "cross_k": {1: "batch", 2: "ctx"},
            "cross_v": {1: "batch", 2: "ctx"},
            "cross_bias": {0: "batch", 2: "ctx"},
            **{f"tail_kt_{i}": {2: "tail"} for i in range(n_layer)},
            **{f"tail_v_{i}": {1: "tail"} for i in range(n_layer)},
            "tail_bias": {0: "batch", 2: "tail"},
            "logit_positions": {0: "scored"},
            "logits": {0: "batch", 1: "scored"},
            "new_self_k": {1: "batch", 2: "total"},
            "new_self_v": {1: "batch", 2: "total"},
        },
        opset_version=ONNX_OPSET,
        dynamo=False,
    )


def _quantize_int8(out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer reports every tensor on the root logger; keep that out of the service's log.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        for part in ("encoder", "decoder"):
            quantize_dynamic(
                str(out / f"{part}.onnx"),
                str(out / f"{part}.int8.onnx"),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
    finally:
        root.setLevel(level)


def _export_torchscript(model: Whisper, out: Path) -> None:
    mel, dec = _example_inputs(model)
    with torch.no_grad():
        torch.jit.trace(EncoderExport(model), (mel,), check_trace=False).save(str(out / "encoder.ts"))
        torch.jit.trace(DecoderExport(model), dec, check_trace=False).save(str(out / "decoder.ts"))


def prepare(source: Path, cache_dir: Path, kinds: list[str], progress: Progress | None = None) -> Path:
    """Convert `source` into the requested artifact kinds (see ARTIFACTS) if not already cached."""
    say = progress or (lambda msg: log.info("%s", msg))
    out = cache_dir / source_hash(source)
    missing = missing_kinds(out, kinds)
    if not missing:
        return out
    out.mkdir(parents=True, exist_ok=True)
    say(f"converting {source} -> {out} ({', '.join(missing)})")
    t0 = time.perf_counter()
    model = load_whisper(source)
    # Build into a temporary dir and rename, so a crash mid-export never leaves a half-written cache.
    tmp = out / f".tmp-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    try:
        with torch.no_grad():
            if ("onnx" in missing or "onnx-int8" in missing) and not (out / "encoder.onnx").exists():
                say("  exporting ONNX encoder and decoder")
                _export_onnx(model, tmp)
                for f in ARTIFACTS["onnx"]:
                    (tmp / f).replace(out / f)
            if "onnx-int8" in missing:
                say("  quantizing ONNX to int8 (dynamic, weights only)")
                for f in ARTIFACTS["onnx"]:
                    (tmp / f).symlink_to(out / f)
                _quantize_int8(tmp)
                for f in ARTIFACTS["onnx-int8"]:
                    (tmp / f).replace(out / f)
            if "torchscript" in missing:
                say("  tracing TorchScript encoder and decoder")
                _export_torchscript(model, tmp)
                for f in ARTIFACTS["torchscript"]:
                    (tmp / f).replace(out / f)
    finally:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    (out / "meta.json").write_text(json.dumps({"source": str(source), "dims": model.dims.as_dict()}, indent=1))
    say(f"  done in {time.perf_counter() - t0:.1f} s")
    return out
