"""The admin-side operations on hot-word lists: tokenizer checks on upload, then the store.

Upload policy: phrases the tokenizer cannot carry (encode/decode does not round-trip, or more tokens than
allowed) are left out of the stored version and listed in `UploadResult.rejected`. The upload fails
(`UploadRejected`, HTTP 422) instead when it is `strict`, or when no phrase would be left of a non-empty
upload, so an admin never silently gets an empty list.
"""

from __future__ import annotations

from typing import Protocol

from hotwords.config import HotwordsConfig
from hotwords.graph import check_phrase
from hotwords.metrics import REJECTED
from hotwords.schema import AuditRecord, HotwordList, HotwordListIn, Rejection, UploadResult
from hotwords.store import HotwordStore


class Codec(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class UploadRejected(ValueError):
    def __init__(self, rejected: list[Rejection]) -> None:
        super().__init__(f"{len(rejected)} phrase(s) cannot be represented by the tokenizer")
        self.rejected = rejected


class HotwordService:
    def __init__(self, store: HotwordStore, codec: Codec, config: HotwordsConfig) -> None:
        self.store = store
        self.codec = codec
        self.config = config

    def check(self, content: HotwordListIn) -> tuple[HotwordListIn, list[Rejection]]:
        """The content without the phrases the tokenizer cannot carry, and those phrases."""
        rejected: list[Rejection] = []
        kept = []
        for entry in content.entries:
            issue = check_phrase(entry.phrase, self.codec.encode, self.codec.decode, self.config.max_phrase_tokens)
            if issue is None:
                kept.append(entry)
            else:
                rejected.append(Rejection(phrase=entry.phrase, reason=issue.reason, detail=issue.detail))
        return content.model_copy(update={"entries": kept}), rejected

    async def put(
        self,
        name: str,
        content: HotwordListIn,
        by: str,
        expected_version: int | None = None,
        strict: bool = False,
    ) -> UploadResult:
        cleaned, rejected = self.check(content)
        for item in rejected:
            REJECTED.labels(item.reason).inc()
        if rejected and (strict or not cleaned.entries):
            raise UploadRejected(rejected)
        record = await self.store.put(name, cleaned, by, expected_version)
        return UploadResult(list=record, rejected=rejected)

    async def get(self, name: str, version: int | None = None) -> HotwordList | None:
        return await self.store.get(name, version)

    async def list_current(self) -> list[HotwordList]:
        return await self.store.list_current()

    async def versions(self, name: str) -> list[int]:
        return await self.store.versions(name)

    async def rollback(self, name: str, version: int, by: str, expected_version: int | None = None) -> UploadResult:
        return UploadResult(list=await self.store.rollback(name, version, by, expected_version))

    async def delete(self, name: str, by: str, expected_version: int | None = None) -> int:
        return await self.store.delete(name, by, expected_version)

    async def audit(self, name: str, limit: int = 100) -> list[AuditRecord]:
        return await self.store.audit(name, limit)
