"""Which kind of Whisper model a path holds, judged by its files alone (no weights are read)."""

from __future__ import annotations

from pathlib import Path

from .ct2 import ModelFormatError

# A prepared model (see `prepared.py`): converted graphs with their meta.json and the tokenizer, but no
# checkpoint. It runs as it is and cannot be converted again.
PREPARED = "prepared"


def prepared_dir(cache_dir: Path, name: str) -> Path:
    """Where a packaged model's prepared directory lives in a cache."""
    return cache_dir / PREPARED / name


def is_prepared(path: Path) -> bool:
    return path.is_dir() and (path / "meta.json").exists() and (path / "tokenizer.json").exists()


def detect_format(model_dir: Path) -> str:
    """The format: openai (a .pt file), ct2, hf or prepared."""
    if model_dir.is_file() and model_dir.suffix == ".pt":
        return "openai"
    if (model_dir / "model.bin").exists():
        return "ct2"
    if (model_dir / "model.safetensors").exists() or (model_dir / "pytorch_model.bin").exists():
        return "hf"
    if is_prepared(model_dir):
        return PREPARED
    raise ModelFormatError(
        f"{model_dir}: not a Whisper model (expected model.bin, model.safetensors, pytorch_model.bin, a .pt file "
        "or a prepared model directory)"
    )
