"""Prepared models: the graphs a runtime image ships, loaded and run without PyTorch or the weights package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asr_engine.config import EngineConfig
from asr_engine.models.artifacts import source_hash
from asr_engine.models.ct2 import ModelFormatError
from asr_engine.models.formats import detect_format, prepared_dir
from asr_engine.models.prepared import install
from asr_engine.models.registry import resolve_model

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter where PyTorch cannot be imported, as in the runtime image.
_NO_TORCH = """
import json, sys
from pathlib import Path

BLOCKED = {"torch"}

class Blocked:
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, Blocked())

from asr_engine.audio.wav import read_wav
from asr_engine.config import EngineConfig, RecognizerConfig
from asr_engine.recognizer import Recognizer
from asr_engine.transcribe import transcribe_audio
from asr_engine.vad import SileroVad

cache, model, wav = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rec = Recognizer(RecognizerConfig(model=model, engine=EngineConfig(cache_dir=cache)))
text = transcribe_audio(rec, SileroVad(), read_wav(wav)).text
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"text": text, "loaded": loaded, "providers": rec.engine.providers}))
"""


@pytest.fixture(scope="module")
def prepared_cache(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding only tiny.en's prepared CPU model, as the runtime image has it."""
    source = resolve_model("tiny.en", model_cache)
    artifacts = model_cache / "artifacts" / source_hash(source)
    cache = tmp_path_factory.mktemp("runtime-cache")
    install(source, artifacts, EngineConfig(), prepared_dir(cache, "tiny.en"))
    return cache


def test_prepared_model_holds_only_what_the_engine_runs(prepared_cache: Path):
    files = {p.name for p in prepared_dir(prepared_cache, "tiny.en").iterdir()}
    assert files == {"encoder.int8.onnx", "decoder.int8.onnx", "meta.json", "tokenizer.json", "config.json"}
    assert detect_format(prepared_dir(prepared_cache, "tiny.en")) == "prepared"


def test_transcribes_from_a_prepared_cache_without_torch(prepared_cache: Path, asterisk_dev):
    wav, ref = next((p, r) for p, r in asterisk_dev if p.stem == "agent-pass")
    out = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(prepared_cache), str(prepared_dir(prepared_cache, "tiny.en")), str(wav)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [] and result["providers"] == ["CPUExecutionProvider"]
    assert result["text"].lower().strip(".").replace(",", "") == ref


def test_packaged_name_resolves_to_its_prepared_model_without_the_package(prepared_cache: Path, monkeypatch):
    from asr_engine.models import registry

    spec = registry.PACKAGED["tiny.en"]
    absent = "voicenav_absent_weights"
    gone = registry.PackagedModel(spec.package, (absent, "model"), ((absent, "model/model.bin", "0" * 64),))
    monkeypatch.setitem(registry.PACKAGED, "tiny.en", gone)
    assert resolve_model("tiny.en", prepared_cache) == prepared_dir(prepared_cache, "tiny.en")
    with pytest.raises(registry.ModelNotFoundError, match="needs"):
        resolve_model("tiny.en", prepared_cache / "elsewhere")


def test_prepared_model_without_the_needed_graphs_is_refused(prepared_cache: Path):
    from asr_engine.config import RecognizerConfig
    from asr_engine.models.registry import ModelNotFoundError
    from asr_engine.recognizer import engine_for

    # The CPU image ships int8 graphs only: asking it for fp32 (int8 off) must say so, not convert.
    model = str(prepared_dir(prepared_cache, "tiny.en"))
    cfg = RecognizerConfig(model=model, engine=EngineConfig(int8="none", cache_dir=prepared_cache))
    with pytest.raises(ModelNotFoundError, match="prepared without onnx"):
        engine_for(cfg)


def test_prepared_model_cannot_be_loaded_as_weights(prepared_cache: Path):
    from asr_engine.models.checkpoints import load_whisper

    with pytest.raises(ModelFormatError, match="not weights"):
        load_whisper(prepared_dir(prepared_cache, "tiny.en"))
