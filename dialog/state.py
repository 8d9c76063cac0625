"""The per-call dialog state and the record of one turn: plain pydantic data, stored as JSON."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

HISTORY_LIMIT = 20  # "go back" depth kept; older nodes are dropped


class PromptRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    wav: str | None = None


class CallContext(BaseModel):
    """Where one call stands in its flow. The policy returns a new one for every event."""

    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1, max_length=200)
    flow_id: str
    caller: str = ""
    transport: Literal["sip", "webrtc"] = "sip"
    started_at: float = 0.0  # unix seconds
    node: str | None = None
    confirming: bool = False  # waiting for yes/no on collected digits
    failures: int = 0  # no-input + no-match in the current node
    turns: int = 0  # answers the dialog has given in this call
    node_turns: int = 0  # ... and in the current node
    rejections: int = 0  # "no" to a confirmation in the current node
    call_rejections: int = 0  # ... and in the whole call
    escalated: bool = False  # the escalation target was taken once already
    no_input_count: int = 0
    no_match_count: int = 0
    digit_buffer: str = ""
    slots: dict[str, str] = Field(default_factory=dict)
    history: list[str] = Field(default_factory=list)
    last_prompts: list[PromptRef] = Field(default_factory=list)
    ended: bool = False
    outcome: dict[str, str] | None = None
    version: int = 0  # bumped by the store on every write


class Turn(BaseModel):
    """One event and the dialog's answer to it."""

    model_config = ConfigDict(extra="forbid")

    seq: int = 0  # assigned by the store
    at: float  # unix seconds
    node: str | None
    event: str  # call_started, utterance, dtmf, no_input, hangup
    prompts: list[str] = Field(default_factory=list)  # what was played in answer (text or wav path)
    transcript: str | None = None
    dtmf: str | None = None
    intent: str | None = None
    confidence: float | None = None
    asr_confidence: float | None = None
    latency_ms: float | None = None
