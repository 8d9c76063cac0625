"""Only tests that can reach Redis and the peers run here; they skip cleanly otherwise."""

from __future__ import annotations

import socket

import pytest
from callers import CALLERS_DEV, MODEL_CACHE


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = None
    if not _redis_up():
        reason = "Redis is not running on 127.0.0.1:6379"
    elif not (CALLERS_DEV / "manifest.jsonl").exists():
        reason = "callers_dev speech data is not beside this checkout"
    if reason:
        for item in items:
            if "tests/calls/" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
