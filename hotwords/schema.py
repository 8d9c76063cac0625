"""Pydantic models of hot-word lists: what admins upload, what the store keeps, what the API answers."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

MAX_PHRASES = 2000
MAX_PHRASE_CHARS = 100
MAX_BOOST = 10.0
NAME_PATTERN = r"^[a-z0-9_-]{1,64}$"

_SCOPE_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
_SCOPE_RE = re.compile(
    rf"^(?:global|tenant:{_SCOPE_ID}|flow:{_SCOPE_ID}|node:{_SCOPE_ID}/{_SCOPE_ID}|call:{_SCOPE_ID})$"
)
SCOPE_PATTERN = _SCOPE_RE.pattern
LANGUAGE_PATTERN = r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?$"
_SPACES = re.compile(r"\s+")

ListName = Annotated[str, Field(pattern=NAME_PATTERN, description="slug: [a-z0-9_-], at most 64 characters")]


def normalize_phrase(phrase: str) -> str:
    """The key two phrases are compared by: NFKC, casefolded, whitespace collapsed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", phrase).casefold()).strip()


def clean_phrase(phrase: str) -> str:
    """The phrase as stored: NFKC with whitespace collapsed, case kept (it matters to the tokenizer)."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", phrase)).strip()


def validate_scope(scope: str) -> str:
    if not _SCOPE_RE.fullmatch(scope):
        raise ValueError(
            f"invalid scope {scope!r}: expected global, tenant:<id>, flow:<id>, node:<flow>/<node> or call:<id>"
        )
    return scope


def scope_rank(scope: str) -> int:
    """Order of composition, from the broadest scope to the narrowest."""
    return ("global", "tenant", "flow", "node", "call").index(scope.split(":", 1)[0])


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The raw cap only bounds work before cleaning; the real limit applies to the cleaned phrase.
    phrase: str = Field(min_length=1, max_length=MAX_PHRASE_CHARS * 4)
    boost: float | None = Field(
        default=None, gt=0, le=MAX_BOOST, description="per-token boost; the configured default when absent"
    )

    @field_validator("phrase")
    @classmethod
    def _phrase(cls, value: str) -> str:
        if any(unicodedata.category(ch) == "Cc" for ch in value if ch != " "):
            raise ValueError("phrase contains control characters (tabs, newlines, ...)")
        cleaned = clean_phrase(value)
        if not cleaned:
            raise ValueError("phrase is empty")
        if len(cleaned) > MAX_PHRASE_CHARS:
            raise ValueError(f"phrase longer than {MAX_PHRASE_CHARS} characters ({len(cleaned)})")
        return cleaned


def _check_entries(entries: list[Entry]) -> list[Entry]:
    if len(entries) > MAX_PHRASES:
        raise ValueError(f"too many phrases: {len(entries)} > {MAX_PHRASES}")
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        key = normalize_phrase(entry.phrase)
        if key in seen:
            raise PydanticCustomError(
                "duplicate_phrase",
                "entries[{index}] {phrase!r} duplicates entries[{first}] after normalization",
                {"index": index, "first": seen[key], "phrase": entry.phrase},
            )
        seen[key] = index
    return entries


class HotwordListIn(BaseModel):
    """An upload: the content of a list, without the server-assigned fields."""

    model_config = ConfigDict(extra="forbid")

    # the pattern documents the scope grammar; the validator checks it, with a message that spells it out
    scope: str = Field(default="global", json_schema_extra={"pattern": SCOPE_PATTERN})
    language: str = Field(default="en", pattern=LANGUAGE_PATTERN)
    entries: list[Entry] = Field(max_length=MAX_PHRASES)

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        return validate_scope(value)

    @field_validator("entries")
    @classmethod
    def _entries(cls, value: list[Entry]) -> list[Entry]:
        return _check_entries(value)


class HotwordList(HotwordListIn):
    """A stored version of a list."""

    name: ListName
    version: int = Field(ge=1)
    updated_at: datetime
    updated_by: str


class Rejection(BaseModel):
    phrase: str
    reason: Literal["not_representable", "too_many_tokens"]
    detail: str


class UploadResult(BaseModel):
    """The answer to a PUT or a rollback: the stored version and what was left out of it."""

    list: HotwordList
    rejected: list[Rejection] = []


class ListSummary(BaseModel):
    name: str
    scope: str
    language: str
    version: int
    phrases: int
    updated_at: datetime
    updated_by: str


class AuditRecord(BaseModel):
    at: datetime
    by: str
    action: Literal["put", "rollback", "delete"]
    name: str
    old_version: int | None
    new_version: int | None


class ChangeEvent(BaseModel):
    """Announced to every replica after a change of a list."""

    name: str
    version: int | None = Field(description="the new current version; null when the list was deleted")


class ErrorBody(BaseModel):
    error: str
    detail: list[dict[str, object]] = []
