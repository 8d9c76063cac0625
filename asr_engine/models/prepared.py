"""Prepared models: the converted graphs one engine configuration runs, with their meta.json and the
tokenizer and config the decoder reads, in one directory without the checkpoint. Runtime images ship
their model this way, so they need neither the weights packages nor PyTorch.

    voicenav prepare --model tiny.en --engine onnx            # converts (needs PyTorch)
    python -m asr_engine.models.prepared --model tiny.en      # -> <cache>/prepared/tiny.en/

A packaged model name resolves to its prepared directory when its package is not installed
(`registry.resolve_model`); any prepared directory can also be given as the model path.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from ..config import EngineConfig
from .artifacts import kinds_for, missing_kinds, run_files, source_hash
from .formats import prepared_dir
from .registry import resolve_model

# What the tokenizer and the suppression config (`registry.suppress_config`) are read from.
MODEL_FILES = ("tokenizer.json", "config.json", "generation_config.json")


def install(source: Path, artifacts: Path, config: EngineConfig, dest: Path) -> Path:
    """Copy the graphs `config` runs, converted from `source` (in `artifacts`), and its tokenizer into
    `dest`."""
    if not source.is_dir() or not (source / "tokenizer.json").exists():
        raise ValueError(f"{source}: a prepared model needs a model directory with its tokenizer.json")
    if missing := missing_kinds(artifacts, kinds_for(config)):
        raise FileNotFoundError(f"{artifacts} lacks {', '.join(missing)}: run `voicenav prepare` first")
    files = [artifacts / f for f in [*run_files(config), "meta.json"]]
    files += [source / f for f in MODEL_FILES if (source / f).exists()]
    # Assemble beside the destination and rename, so a reader never sees half a model.
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, tmp / f.name)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m asr_engine.models.prepared", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny.en", help="packaged model name or model directory")
    ap.add_argument("--engine", choices=["onnx", "torchscript"], default="onnx")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu takes int8 graphs, cuda fp32")
    ap.add_argument("--cache-dir", type=Path, help="where `voicenav prepare` converted it (default: as it does)")
    ap.add_argument("--out", type=Path, help="default: <cache-dir>/prepared/<model>")
    args = ap.parse_args(argv)
    config = EngineConfig(kind=args.engine, device=args.device)
    cache_dir = args.cache_dir or config.cache_dir
    source = resolve_model(args.model, cache_dir)
    dest = args.out or prepared_dir(cache_dir, Path(args.model).name)
    install(source, cache_dir / "artifacts" / source_hash(source), config, dest)
    print(f"prepared {args.model} ({', '.join(run_files(config))}) in {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
