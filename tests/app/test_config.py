"""The settings tree: precedence of defaults, environment and flags, the generated flags and docs, and
`voicenav config --print` with secrets hidden."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.app.cli import _parser
from ivr.app.config import FLAG_ALIASES, AppConfig, UnknownSettings, load_config, settings
from ivr.app.config_doc import markdown
from ivr.app.flags import flag_values

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in os.environ:
        if name.startswith("VOICENAV_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _serve_flags(*argv: str) -> dict:
    return flag_values(_parser().parse_args(["serve", *argv]))


def test_flags_beat_environment_beat_defaults(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("VOICENAV_SIP__PORT", "7001")
    clean_env.setenv("VOICENAV_CALLS__MAX_CALLS", "5")
    clean_env.setenv("VOICENAV_RECOGNIZER__ENGINE__DEVICE", "cuda")
    clean_env.setenv("VOICENAV_CALLS__QUEUE_URIS", '{"billing": "sip:billing@pbx"}')
    clean_env.setenv("VOICENAV_RTP__PORT_MIN", "")  # empty: unset
    cfg = load_config(_serve_flags("--sip-port", "7002", "--device", "cpu", "--beam-size", "4"))
    assert cfg.sip.port == 7002  # flag over environment
    assert cfg.recognizer.engine.device == "cpu"
    assert cfg.calls.max_calls == 5  # environment over default
    assert cfg.calls.queue_uris == {"billing": "sip:billing@pbx"}
    assert cfg.recognizer.decode.beam_size == 4
    assert cfg.http.port == 8080 and cfg.calls.drain_timeout_s == 300.0  # defaults
    assert cfg.rtp.port_min == 20000


def test_a_partial_section_keeps_the_tree_defaults(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("VOICENAV_RTP__INACTIVITY_TIMEOUT", "12")
    cfg = load_config(_serve_flags("--recognizer-engine-device-id", "1"))
    assert (cfg.rtp.inactivity_timeout, cfg.rtp.port_min, cfg.rtp.port_max) == (12.0, 20000, 20999)
    assert cfg.recognizer.engine.device_id == 1 and cfg.recognizer.model_name() == "tiny.en"


@pytest.mark.parametrize(
    ("flags", "model"),
    [
        ((), "tiny.en"),
        (("--device", "cuda"), "base"),  # one flag after the defaults still picks the device's model
        (("--device", "cuda", "--model", "tiny.en"), "tiny.en"),
        (("--model", "base"), "base"),
    ],
)
def test_the_default_model_follows_the_device(
    clean_env: pytest.MonkeyPatch, flags: tuple[str, ...], model: str
) -> None:
    assert load_config(_serve_flags(*flags)).recognizer.model_name() == model


@pytest.mark.parametrize(
    "name", ["VOICENAV_SIP__PROT", "VOICENAV_SIP_PORT", "VOICENAV_MAX_CALLS", "VOICENAV_CACHE_DIR"]
)
def test_a_variable_that_names_no_setting_is_refused(clean_env: pytest.MonkeyPatch, name: str) -> None:
    clean_env.setenv(name, "7000")
    with pytest.raises(UnknownSettings, match=name):
        load_config()


def test_variables_that_are_not_settings_pass(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("VOICENAV_PREPARE_MODELS", "tiny.en base")
    clean_env.setenv("VOICENAV_ALLOW_SKIPS", "1")
    assert load_config().sip.port == 5060


def test_rtp_on_loopback_behind_a_public_sip_listener_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"rtp\.bind_host"):
        load_config({"sip": {"host": "0.0.0.0", "public_host": "192.0.2.7"}})
    cfg = load_config({"sip": {"host": "0.0.0.0", "public_host": "192.0.2.7"}, "rtp": {"bind_host": "0.0.0.0"}})
    assert cfg.rtp.bind_host == "0.0.0.0"


def test_every_setting_has_a_flag_except_secrets_and_aliases_name_settings() -> None:
    keys = {s.key for s in settings()}
    assert set(FLAG_ALIASES) <= keys
    parser = _parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {opt for action in serve._actions for opt in action.option_strings}
    for s in settings():
        assert s.secret or set(s.flags) <= flags, s.key
        assert not s.secret or not set(s.flags) & flags, s.key
        assert s.field.description, f"{s.key} has no description for --help and the docs"


def test_transcribe_keeps_its_flags() -> None:
    args = _parser().parse_args(
        [
            "transcribe",
            "--json",
            "--cache-dir",
            "/tmp/m",
            "--model",
            "base",
            "--threads",
            "2",
            "--engine",
            "onnx",
            "a.wav",
        ]
    )
    assert flag_values(args) == {
        "recognizer": {"model": "base", "engine": {"cache_dir": "/tmp/m", "intra_op_threads": "2", "kind": "onnx"}}
    }


def test_configuration_doc_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert doc == markdown(), "docs/configuration.md is stale: voicenav config --markdown > docs/configuration.md"
    for s in settings():
        assert f"`{s.env}`" in doc


def test_config_print_shows_environment_and_flags_and_hides_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICENAV_")}
    env |= {
        "VOICENAV_AUTH__TOKEN": "s3cret-token-value",
        "VOICENAV_WEBRTC__ICE_SERVERS": json.dumps(
            [{"urls": ["turn:turn.example.org"], "username": "u", "credential": "s3cret-turn"}]
        ),
        "VOICENAV_REDIS__URL": "redis://127.0.0.1:6379/3",
        "VOICENAV_SIP__PORT": "7001",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "ivr.app.cli", "config", "--print", "--format", "json", "--sip-port", "7002"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "s3cret" not in proc.stdout
    shown = json.loads(proc.stdout)
    assert shown["auth"]["token"] == "**********"
    assert shown["webrtc"]["ice_servers"][0]["credential"] == "**********"
    assert shown["redis"]["url"] == "redis://127.0.0.1:6379/3"
    assert shown["sip"]["port"] == 7002
    assert AppConfig.model_validate({k: v for k, v in shown.items() if k not in ("auth", "webrtc")})


def test_config_print_refuses_a_bad_value() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICENAV_")} | {"VOICENAV_HTTP__PORT": "http"}
    proc = subprocess.run(
        [sys.executable, "-m", "ivr.app.cli", "config", "--print"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2 and "http.port" in proc.stderr, proc.stderr


def test_flags_take_booleans_choices_and_json(clean_env: pytest.MonkeyPatch) -> None:
    argv = ["--no-rtp-inband-dtmf", "--sip-transports", '["udp"]', "--webrtc-sample-rate", "8000"]
    cfg = load_config(_serve_flags(*argv, "--calls-queue-uris", '{"sales": "sip:sales@pbx"}'))
    assert cfg.rtp.inband_dtmf is False and cfg.sip.transports == ("udp",) and cfg.webrtc.sample_rate == 8000
    assert cfg.calls.queue_uris == {"sales": "sip:sales@pbx"}
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--device", "tpu"])
