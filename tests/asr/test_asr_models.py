"""Model loading: the packaged CTranslate2 weights, Hugging Face and OpenAI checkpoints, the export
cache, and the runtime options built for CPU and CUDA."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_engine.config import EngineConfig, cpu_quota
from asr_engine.engines.base import DeviceUnavailableError
from asr_engine.engines.onnx import providers_for, session_options
from asr_engine.engines.torchscript import placement_for
from asr_engine.models.artifacts import kinds_for, run_files
from asr_engine.models.checkpoints import load_whisper
from asr_engine.models.ct2 import ModelFormatError, read_ct2_model
from asr_engine.models.export import prepare, source_hash
from asr_engine.models.registry import ModelIntegrityError, ModelNotFoundError, resolve_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return resolve_model("tiny.en", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_whisper(tiny_dir)


def test_ct2_reader_reads_packaged_weights(tiny_dir):
    v = read_ct2_model(tiny_dir / "model.bin")
    assert v["decoder/embeddings/weight"].shape == (51864, 384)
    assert v["decoder/projection/weight"] is v["decoder/embeddings/weight"]  # alias resolved
    assert v["encoder/layer_3/self_attention/linear_0/weight"].shape == (1152, 384)


def test_ct2_reader_rejects_truncated_and_foreign_files(tmp_path, tiny_dir):
    cut = tmp_path / "model.bin"
    cut.write_bytes((tiny_dir / "model.bin").read_bytes()[:100_000])
    with pytest.raises(ModelFormatError, match="truncated"):
        read_ct2_model(cut)
    cut.write_bytes(b"\x06\x00\x00\x00" + b"\x0c\x00TransformerS\x00" + b"\x00" * 20)
    with pytest.raises(ModelFormatError):
        read_ct2_model(cut)


def test_ct2_mapping_keeps_whisper_structure(tiny):
    d = tiny.dims
    assert (d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_layer, d.n_vocab) == (80, 1500, 384, 4, 51864)
    # The key projection carries no bias in Whisper; CTranslate2 stores zeros there.
    assert tiny.encoder.blocks[0].attn.key.bias is None


def _hf_name(name: str) -> str:
    fixed = {
        "encoder.positional_embedding": "model.encoder.embed_positions.weight",
        "decoder.positional_embedding": "model.decoder.embed_positions.weight",
        "decoder.token_embedding.weight": "model.decoder.embed_tokens.weight",
    }
    if name in fixed:
        return fixed[name]
    for a, b in [
        ("encoder.ln_post.", "encoder.layer_norm."),
        ("decoder.ln.", "decoder.layer_norm."),
        (".blocks.", ".layers."),
        (".cross_attn_ln.", ".encoder_attn_layer_norm."),
        (".attn_ln.", ".self_attn_layer_norm."),
        (".mlp_ln.", ".final_layer_norm."),
        (".cross_attn.", ".encoder_attn."),
        (".attn.", ".self_attn."),
        (".query.", ".q_proj."),
        (".key.", ".k_proj."),
        (".value.", ".v_proj."),
        (".out.", ".out_proj."),
        (".mlp.0.", ".fc1."),
        (".mlp.2.", ".fc2."),
    ]:
        name = name.replace(a, b)
    return "model." + name


def _same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def test_hugging_face_checkpoint_loads(tmp_path, tiny):
    from safetensors.torch import save_file

    d = tiny.dims
    state = {_hf_name(k): v.clone() for k, v in tiny.state_dict().items()}
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"].clone()
    save_file(state, str(tmp_path / "model.safetensors"))
    config = {
        "num_mel_bins": d.n_mels,
        "max_source_positions": d.n_audio_ctx,
        "d_model": d.n_audio_state,
        "encoder_attention_heads": d.n_audio_head,
        "encoder_layers": d.n_audio_layer,
        "vocab_size": d.n_vocab,
        "max_target_positions": d.n_text_ctx,
        "decoder_attention_heads": d.n_text_head,
        "decoder_layers": d.n_text_layer,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    _same_weights(load_whisper(tmp_path), tiny)


def test_openai_checkpoint_loads(tmp_path, tiny):
    path = tmp_path / "tiny.en.pt"
    torch.save({"dims": tiny.dims.as_dict(), "model_state_dict": tiny.state_dict()}, path)
    _same_weights(load_whisper(path), tiny)
    with pytest.raises(ModelNotFoundError):
        resolve_model(str(tmp_path / "missing.pt"), tmp_path)


def test_export_is_cached_by_source_hash(tmp_path, tiny_dir, tiny):
    messages: list[str] = []
    out = prepare(tiny_dir, tmp_path, ["onnx"], messages.append)
    assert (out / "encoder.onnx").exists() and (out / "decoder.onnx").exists()
    assert out.name == source_hash(tiny_dir) and any("exporting ONNX" in m for m in messages)
    stamp = (out / "decoder.onnx").stat().st_mtime_ns
    again: list[str] = []
    assert prepare(tiny_dir, tmp_path, ["onnx"], again.append) == out
    assert again == [] and (out / "decoder.onnx").stat().st_mtime_ns == stamp
    # Another checkpoint (same weights, other file) is another cache entry.
    pt = tmp_path / "w.pt"
    torch.save({"dims": tiny.dims.as_dict(), "model_state_dict": tiny.state_dict()}, pt)
    assert source_hash(pt) != source_hash(tiny_dir)


def test_packaged_weights_are_verified(tmp_path, monkeypatch):
    from asr_engine.models import registry

    bad = registry.PackagedModel(
        registry.PACKAGED["tiny.en"].package,
        registry.PACKAGED["tiny.en"].files_dir,
        ((registry.PACKAGED["tiny.en"].parts[0][0], registry.PACKAGED["tiny.en"].parts[0][1], "0" * 64),),
    )
    monkeypatch.setitem(registry.PACKAGED, "tiny.en", bad)
    with pytest.raises(ModelIntegrityError, match="does not match the pinned"):
        resolve_model("tiny.en", tmp_path)


def test_cuda_provider_options_from_config():
    cfg = EngineConfig(device="cuda", device_id=1, gpu_mem_limit_mb=1024, intra_op_threads=3, int8="both")
    providers = providers_for(cfg, available=["CUDAExecutionProvider", "CPUExecutionProvider"])
    name, opts = providers[0]
    assert name == "CUDAExecutionProvider" and providers[1] == "CPUExecutionProvider"
    assert opts == {
        "device_id": 1,
        "gpu_mem_limit": 1024 * 1024 * 1024,
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "HEURISTIC",
    }
    # Without a cap the arena may grow to what the device has.
    assert (
        "gpu_mem_limit"
        not in providers_for(cfg.model_copy(update={"gpu_mem_limit_mb": None}), ["CUDAExecutionProvider"])[0][1]
    )
    assert run_files(cfg) == ["encoder.onnx", "decoder.onnx"]  # no int8 kernels on GPU
    so = session_options(cfg)
    assert so.intra_op_num_threads == 3


def test_cuda_without_cuda_provider_fails_naming_the_providers():
    cfg = EngineConfig(device="cuda")
    with pytest.raises(DeviceUnavailableError, match=r"available: CPUExecutionProvider, AzureExecutionProvider"):
        providers_for(cfg, available=["CPUExecutionProvider", "AzureExecutionProvider"])


def test_cuda_without_cuda_provider_falls_back_to_cpu_only_when_allowed(caplog):
    cfg = EngineConfig(device="cuda", allow_cpu_fallback=True)
    with caplog.at_level(logging.WARNING):
        assert providers_for(cfg, available=["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert "no CUDAExecutionProvider" in caplog.text and "running on CPU" in caplog.text


def test_cuda_engine_fails_at_load_on_a_cpu_only_onnxruntime(model_cache):
    """This machine's onnxruntime is the CPU build: loading for CUDA must fail, not serve from the CPU."""
    import onnxruntime as ort

    from asr_engine.config import RecognizerConfig
    from asr_engine.recognizer import engine_for

    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    cfg = RecognizerConfig(model="tiny.en", engine=EngineConfig(device="cuda", cache_dir=model_cache))
    with pytest.raises(DeviceUnavailableError, match="CPUExecutionProvider"):
        engine_for(cfg)
    fallback = RecognizerConfig(
        model="tiny.en", engine=EngineConfig(device="cuda", allow_cpu_fallback=True, cache_dir=model_cache)
    )
    engine, *_ = engine_for(fallback)
    assert engine.providers == ["CPUExecutionProvider"]


def test_cpu_defaults_and_threads_follow_quota():
    cfg = EngineConfig()
    assert providers_for(cfg, available=["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert run_files(cfg) == ["encoder.int8.onnx", "decoder.int8.onnx"]
    assert cfg.threads() == cpu_quota() >= 1


@pytest.mark.parametrize(
    ("int8", "files", "kinds"),
    [
        ("both", ["encoder.int8.onnx", "decoder.int8.onnx"], ["onnx-int8"]),
        ("encoder", ["encoder.int8.onnx", "decoder.onnx"], ["onnx", "onnx-int8"]),
        ("decoder", ["encoder.onnx", "decoder.int8.onnx"], ["onnx", "onnx-int8"]),
        ("none", ["encoder.onnx", "decoder.onnx"], ["onnx"]),
    ],
)
def test_int8_is_chosen_per_part(int8, files, kinds):
    cfg = EngineConfig(int8=int8)
    assert run_files(cfg) == files and kinds_for(cfg) == kinds


def test_torch_cuda_placement_from_config(caplog):
    cfg = EngineConfig(kind="torchscript", device="cuda", device_id=0, gpu_mem_limit_mb=2048, intra_op_threads=2)
    p = placement_for(cfg, cuda_available=True, total_memory=16 * 1024**3)
    assert p.device == "cuda:0" and p.memory_fraction == pytest.approx(2048 / 16384) and p.threads == 2
    with pytest.raises(DeviceUnavailableError, match="no CUDA device"):
        placement_for(cfg, cuda_available=False, total_memory=None)
    with caplog.at_level(logging.WARNING):
        fallback = cfg.model_copy(update={"allow_cpu_fallback": True})
        assert placement_for(fallback, cuda_available=False, total_memory=None).device == "cpu"
    assert "no CUDA device" in caplog.text


def test_onnx_and_torchscript_step_outputs_match(model_cache):
    """The exported graphs compute the same step as the eager model on the same inputs."""
    from asr_engine.decoding.search import SharedTail
    from asr_engine.engines.onnx import OnnxEngine
    from asr_engine.engines.torchscript import TorchScriptEngine

    src = resolve_model("tiny.en", model_cache)
    art = prepare(src, model_cache / "artifacts", ["onnx", "torchscript"])
    onnx = OnnxEngine(art, EngineConfig(int8="none"))
    ts = TorchScriptEngine(art, EngineConfig(kind="torchscript"))
    mel = np.random.default_rng(0).normal(0, 1, (2, 80, 300)).astype(np.float32)
    k1, v1 = onnx.encode(mel)
    k2, _ = ts.encode(mel)
    np.testing.assert_allclose(k1, k2, atol=2e-3)
    tokens = np.array([[50257, 50362]] * 2, dtype=np.int64)
    pos = np.array([[0, 1]] * 2, dtype=np.int64)
    bias = np.where(np.tril(np.ones((2, 2), bool)), 0, -1e9).astype(np.float32)[None].repeat(2, 0)
    empty = np.zeros((4, 2, 0, 384), np.float32)
    cb = np.zeros((2, 1, 150), np.float32)
    # A shared tail of 40 positions, the first 20 of them covered by each row's own encoding.
    tail = SharedTail.of(k1[:, 0, :40], v1[:, 0, :40], n_head=6)
    tk, tv = tail.kt, tail.v
    tb = np.zeros((2, 1, 40), np.float32)
    tb[:, :, :20] = -1e9
    every = np.arange(2, dtype=np.int64)  # logits for both new positions
    l1, *_ = onnx.decode(tokens, pos, bias, empty, empty, k1, v1, cb, tk, tv, tb, every)
    l2, *_ = ts.decode(tokens, pos, bias, empty, empty, k1, v1, cb, tk, tv, tb, every)
    assert l1.shape == (2, 2, 51864)
    np.testing.assert_allclose(l1, l2, atol=2e-3)
    assert (l1.argmax(-1) == l2.argmax(-1)).all()
    # Keys read from the shared tail count as the row's own: 20 own positions + 20 from the tail give
    # the step that 40 own positions give with the tail masked out.
    own = np.zeros((2, 1, 20), np.float32)
    spliced, *_ = onnx.decode(
        tokens, pos, bias, empty, empty, k1[:, [0, 0], :20], v1[:, [0, 0], :20], own, tk, tv, tb, every
    )
    masked = np.full_like(tb, -1e9)
    whole = np.zeros((2, 1, 40), np.float32)
    alone, *_ = onnx.decode(
        tokens, pos, bias, empty, empty, k1[:, [0, 0], :40], v1[:, [0, 0], :40], whole, tk, tv, masked, every
    )
    np.testing.assert_allclose(spliced, alone, atol=2e-3)


def test_multilingual_base_model_joins_parts_and_transcribes(model_cache, asterisk_dev):
    from asr_engine.audio.wav import read_wav
    from asr_engine.config import RecognizerConfig
    from asr_engine.recognizer import Recognizer, Utterance

    src = resolve_model("base", model_cache)
    assert (src / "model.bin").stat().st_size > 140_000_000  # both parts, joined once into the cache
    rec = Recognizer(RecognizerConfig(model="base", engine=EngineConfig(cache_dir=model_cache)))
    s = rec.tokenizer.special
    assert rec.tokenizer.sot_sequence("en") == [s.sot, s.lang["en"], s.transcribe, s.no_timestamps]
    wav, ref = next((p, r) for p, r in asterisk_dev if p.stem == "agent-pass")
    audio = read_wav(str(wav))
    text = rec.recognize([Utterance(audio.samples, audio.sample_rate)])[0].text
    assert text.lower().replace(",", "").rstrip(".") == ref
