"""Settings of the hot-word service, shared by the API, the store and the replica registry."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from hotwords.schema import MAX_BOOST


class HotwordsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_prefix: str = Field(
        default="voicenav:hotwords", min_length=1, max_length=128, description="Redis key prefix of the lists"
    )
    # Per-token boosts in log-probability units for the decode, which runs without the phrases as prompt
    # (the refine step offers the prompt where a transcript calls for it). On callers_dev with tiny.en,
    # 4 / 0 and 8 / 1 both leave WER on sentences without hot words and on the Asterisk recordings as it
    # is without lists; 8 / 1 writes more names in the first pass (0.27 of them against 0.07), names the
    # refine step otherwise finds.
    default_boost: float = Field(default=4.0, gt=0, le=MAX_BOOST, description="per-token boost of a phrase without one")
    # Whisper splits unknown names into short common pieces (' Z', ' K'); boosting those alone makes
    # greedy decoding loop on them, so the first piece of a phrase gets little or nothing.
    first_piece_boost: float = Field(default=0.0, ge=0, le=MAX_BOOST, description="boost of a phrase's first token")
    # The name check (`Biasing._gate` in the service) decodes a turn again, unbiased, and weighs the
    # name on the audio; that runs in the recognizer's worker between decoder steps and holds every
    # call's decode meanwhile. With 20 callers whose speech ends over 10 s (`bench.turns`, spread20,
    # idle machine) the wire gap went from p50 622 / p95 1192 ms without it to 3617 / 5298 ms with it.
    gate_calls: bool = Field(
        default=False,
        description="calls: a listed name stands only if an unbiased decode of the turn supports it (fewer false "
        "alarms; costs the recognizer a second decode of every turn that names a phrase)",
    )
    max_phrase_tokens: int = Field(default=24, ge=1, le=128, description="longer phrases are refused")
    max_body_bytes: int = Field(default=512 * 1024, ge=1024, description="largest list upload")
    audit_cap: int = Field(default=1000, ge=10, description="audit log entries kept")
    resync_seconds: float = Field(default=30.0, gt=0, description="full reload interval on top of change events")
    reconnect_max_seconds: float = Field(default=10.0, gt=0, description="longest back-off between Redis reconnects")
    prompt_max_chars: int = Field(default=200, ge=0, description="longest decoder prompt built from the phrases")
    executor_min_phrases: int = Field(
        default=200, ge=0, description="graphs with more phrases are compiled in a worker thread"
    )
