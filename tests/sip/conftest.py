"""Fixtures for the SIP tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.sip.helpers import RtpStandIn, UdpClient


@pytest.fixture
def rtp_port() -> Iterator[int]:
    r = RtpStandIn()
    yield r.port
    r.close()


@pytest.fixture
async def udp_client() -> AsyncIterator[UdpClient]:
    client = await UdpClient.open()
    yield client
    client.close()
