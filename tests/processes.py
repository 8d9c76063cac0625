"""Ending a test's child processes."""

from __future__ import annotations

import asyncio


async def stop_process(proc: asyncio.subprocess.Process, within_s: float) -> None:
    """SIGTERM if it is still running, and SIGKILL if it has not exited within `within_s`."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), within_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
