"""The app's settings: one tree that nests each component's own model.

Values come from the models' defaults, then `VOICENAV_<SECTION>__<FIELD>` environment variables
(`__` joins the levels: `VOICENAV_SIP__PORT`, `VOICENAV_RECOGNIZER__ENGINE__DEVICE`; lists and maps
are JSON), then command-line flags (`ivr.app.flags`). Nothing else in the project reads the
environment for settings, and every service gets its own section of this tree.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from asr_engine.config import RecognizerConfig
from asr_engine.vad import VadConfig
from dialog.config import DialogParams
from hotwords.auth import AuthParams
from hotwords.config import HotwordsConfig
from ivr.app.auth import HttpAuthParams
from ivr.app.deletion_cost import PodDeletionCostParams
from ivr.app.redis import RedisParams
from ivr.calls.config import CallsParams
from ivr.calls.prompts import PromptConfig
from ivr.media.rtp_session import RtpSessionConfig
from ivr.sip.config import SipParams
from ivr.webrtc.endpoint import WebRtcConfig

ENV_PREFIX = "VOICENAV_"
ENV_NESTING = "__"


class HttpParams(BaseModel):
    host: str = Field("127.0.0.1", description="address the HTTP API listens on")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port; 0: any free port")
    internal_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="second port serving /metrics, /v1/hotwords* and /v1/calls* (and the public port no longer "
        "does); 0: any free port; none: everything on the one port",
    )
    max_body_mb: float = Field(16.0, gt=0, description="largest request body, e.g. audio posted to /v1/recognize")
    access: HttpAuthParams = Field(HttpAuthParams(), description="which routes need which token role; rate limits")


class AppConfig(BaseSettings):
    # An empty variable counts as unset, as a blank line in a ConfigMap or an `-e NAME=` would mean.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTING, env_ignore_empty=True, extra="forbid"
    )

    sip: SipParams = Field(SipParams(), description="SIP front end")
    rtp: RtpSessionConfig = Field(
        RtpSessionConfig(port_min=20000, port_max=20999), description="RTP media of SIP calls"
    )
    webrtc: WebRtcConfig = Field(WebRtcConfig(), description="WebRTC front end (the softphone page)")
    recognizer: RecognizerConfig = Field(RecognizerConfig(), description="speech recognition")
    vad: VadConfig = Field(VadConfig(), description="voice activity detection: when a caller's turn ends")
    hotwords: HotwordsConfig = Field(HotwordsConfig(), description="hot-word lists and their biasing")
    dialog: DialogParams = Field(DialogParams(), description="call flow, dialog context and call records")
    prompts: PromptConfig = Field(PromptConfig(), description="spoken prompts (text to speech)")
    redis: RedisParams = Field(RedisParams(), description="the Redis of dialog state, call records and hot-word lists")
    auth: AuthParams = Field(AuthParams(), description="admin API tokens")
    http: HttpParams = Field(HttpParams(), description="HTTP API")
    calls: CallsParams = Field(CallsParams(), description="admission, draining and transfers of calls")
    pod_deletion_cost: PodDeletionCostParams = Field(
        PodDeletionCostParams(), description="in Kubernetes: scale-down removes the pods with the fewest calls first"
    )

    @model_validator(mode="before")
    @classmethod
    def _onto_defaults(cls, data: Any) -> Any:
        """A section given in part (one env variable, one flag) keeps the tree's defaults for the rest:
        `VOICENAV_RTP__BIND_HOST` alone must not drop the default RTP port range."""
        if not isinstance(data, Mapping):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            given = data.get(name)
            default = field.get_default(call_default_factory=True)
            if isinstance(given, Mapping) and isinstance(default, BaseModel):
                merged[name] = _deep_merge(default.model_dump(), given)
        return merged

    @model_validator(mode="after")
    def _media_reachable(self) -> AppConfig:
        # RTP bound to loopback behind a SIP listener on a real address would answer calls that never
        # hear anything; say so at start-up instead.
        if _is_loopback(self.rtp.bind_host) and not _is_loopback(self.sip.host):
            raise ValueError(
                f"rtp.bind_host {self.rtp.bind_host} is a loopback address while SIP listens on {self.sip.host}"
            )
        return self


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Setting:
    """One leaf of the tree, with the names it goes by outside."""

    path: tuple[str, ...]
    field: FieldInfo
    default: Any

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def env(self) -> str:
        return ENV_PREFIX + ENV_NESTING.join(self.path).upper()

    @property
    def flags(self) -> tuple[str, ...]:
        return ("--" + "-".join(self.path).replace("_", "-"), *FLAG_ALIASES.get(self.key, ()))

    @property
    def annotation(self) -> Any:
        return self.field.annotation

    @property
    def secret(self) -> bool:
        return SecretStr in (self.annotation, *get_args(self.annotation))


# Short flags for the settings used most, kept from before the flags were generated.
FLAG_ALIASES: dict[str, tuple[str, ...]] = {
    "recognizer.model": ("--model", "--model-dir"),
    "recognizer.engine.kind": ("--engine",),
    "recognizer.engine.device": ("--device",),
    "recognizer.engine.intra_op_threads": ("--threads",),
    "recognizer.engine.cache_dir": ("--cache-dir",),
    "recognizer.decode.beam_size": ("--beam-size",),
    "dialog.flow": ("--flow",),
    "calls.max_calls": ("--max-calls",),
    "calls.drain_timeout_s": ("--drain-timeout",),
}


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field nests, or None for a leaf (lists of models are leaves: they come as JSON)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def settings(sections: tuple[str, ...] | None = None) -> Iterator[Setting]:
    """Every leaf setting of `AppConfig` (of the named sections only, if given), in declaration order."""

    def walk(model: BaseModel, path: tuple[str, ...]) -> Iterator[Setting]:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if nested_model(field.annotation) is not None:
                yield from walk(value, (*path, name))
            else:
                yield Setting((*path, name), field, value)

    for name, field in AppConfig.model_fields.items():
        if sections is None or name in sections:
            yield from walk(field.get_default(call_default_factory=True), (name,))


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """`VOICENAV_` variables that look like settings but name none, which would otherwise be ignored:
    a typo in a nested name, or a flat name of the kind used before the settings were nested
    (`VOICENAV_SIP_PORT`, `VOICENAV_MAX_CALLS`). Other `VOICENAV_` variables (build arguments, test
    switches) are not settings and pass."""
    leaves = list(settings())
    known = {s.env for s in leaves}
    # A section set as a whole (JSON) is a setting too.
    known |= {ENV_PREFIX + ENV_NESTING.join(s.path[:i]).upper() for s in leaves for i in range(1, len(s.path))}
    flat = {ENV_PREFIX + "_".join(s.path).upper() for s in leaves} | {ENV_PREFIX + s.path[-1].upper() for s in leaves}
    return sorted(n for n in environ if n.startswith(ENV_PREFIX) and n not in known and (ENV_NESTING in n or n in flat))


class UnknownSettings(ValueError):
    """The environment names settings that do not exist."""


def load_config(flags: Mapping[str, Any] | None = None) -> AppConfig:
    """Defaults, then the environment, then `flags` (a nested mapping, as `ivr.app.flags` builds it)."""
    unknown = unknown_env(os.environ)
    if unknown:
        raise UnknownSettings(
            f"unknown settings in the environment: {', '.join(unknown)} "
            f"(names nest with {ENV_NESTING}, e.g. VOICENAV_SIP{ENV_NESTING}PORT; see docs/configuration.md)"
        )
    return AppConfig(**(flags or {}))


__all__ = ["AppConfig", "HttpParams", "Setting", "UnknownSettings", "load_config", "settings"]
