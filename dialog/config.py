"""How the dialog keeps call state and records, and which call flow it runs (the Redis it keeps them in
is the app's `redis` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from dialog.records import RecordsParams
from dialog.sealing import SealingParams


class DialogParams(BaseModel):
    key_prefix: str = Field("voicenav:dialog:", min_length=1, description="Redis key prefix of contexts and records")
    flow: Path | None = Field(None, description="call flow YAML; none: the built-in demo flow")
    sealing: SealingParams = Field(SealingParams(), description="encryption at rest of what the dialog keeps in Redis")
    records: RecordsParams = Field(RecordsParams(), description="what call records show")
