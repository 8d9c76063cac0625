"""Tests marked `redis` need the server on 127.0.0.1:6379, tests marked `peers` the callers_dev speech;
they skip cleanly without them."""

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
    mine = [item for item in items if "tests/calls/" in str(item.fspath)]
    if not mine:
        return
    redis_up = _redis_up()
    speech = (CALLERS_DEV / "manifest.jsonl").exists()
    for item in mine:
        if item.get_closest_marker("redis") and not redis_up:
            item.add_marker(pytest.mark.skip(reason="Redis is not running on 127.0.0.1:6379"))
        elif item.get_closest_marker("peers") and not speech:
            item.add_marker(pytest.mark.skip(reason="callers_dev speech data is not beside this checkout"))
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
