"""The one admission of an instance: counting per transport, capacity, draining, loading, and the
series the autoscaler and the alerts read."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY

from ivr.calls.admission import Admission


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def _calls(transport: str) -> float:
    # The gauge is the process's: other tests' admissions may hold calls, so these tests count deltas
    # and leave every call they admit released.
    value = _gauge("voicenav_active_calls", transport=transport)
    assert value is not None
    return value


def test_both_transports_are_exported_before_any_call() -> None:
    code = (
        "from prometheus_client import generate_latest\n"
        "from ivr.calls.admission import Admission\n"
        "Admission(2, 9)\n"
        "print(generate_latest().decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    for series in ('voicenav_active_calls{transport="sip"} 0.0', 'voicenav_active_calls{transport="webrtc"} 0.0'):
        assert series in out.splitlines()
    assert "voicenav_draining 0.0" in out.splitlines()


def test_one_capacity_over_both_transports() -> None:
    admission = Admission(2, 9)
    sip, webrtc = _calls("sip"), _calls("webrtc")
    assert admission.admit("sip") is None
    assert admission.admit("webrtc") is None
    assert admission.admit("sip") == "capacity"
    assert admission.admit("webrtc") == "capacity"
    assert (admission.active(), admission.active("sip"), admission.active("webrtc")) == (2, 1, 1)
    assert _gauge("voicenav_active_calls", transport="sip") == sip + 1
    admission.release("sip")
    assert admission.refusal() is None
    assert admission.admit("webrtc") is None
    assert _gauge("voicenav_active_calls", transport="webrtc") == webrtc + 2
    admission.release("webrtc")
    admission.release("webrtc")
    assert admission.active() == 0
    assert (_calls("sip"), _calls("webrtc")) == (sip, webrtc)


def test_a_release_without_an_admit_is_an_error() -> None:
    admission = Admission(2, 9)
    admission.admit("webrtc")
    with pytest.raises(RuntimeError):
        admission.release("sip")
    admission.release("webrtc")


def test_loading_then_open_then_draining() -> None:
    admission = Admission(3, 7, loading=True)
    assert admission.admit("sip") == "loading" and admission.active() == 0
    admission.open()
    assert admission.admit("sip") is None
    admission.start_draining()
    assert admission.draining and _gauge("voicenav_draining") == 1
    assert admission.admit("webrtc") == "draining" and admission.active() == 1
    admission.open()  # a late load does not undo a drain
    assert admission.refusal() == "draining"
    assert admission.retry_after == {"Retry-After": "7"} and admission.retry_after_s == 7
    admission.release("sip")
    Admission(3, 7)  # a new instance starts undrained
    assert _gauge("voicenav_draining") == 0


def test_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Admission(0, 7)


async def test_wait_idle_returns_when_the_last_call_ends() -> None:
    admission = Admission(3, 7)
    await asyncio.wait_for(admission.wait_idle(), 1)  # nothing in progress
    admission.admit("sip")
    admission.admit("webrtc")
    waiter = asyncio.create_task(admission.wait_idle())
    admission.release("sip")
    await asyncio.sleep(0.01)
    assert not waiter.done()
    admission.release("webrtc")
    await asyncio.wait_for(waiter, 1)
