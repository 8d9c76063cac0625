"""The pod-deletion-cost updater against a stand-in API server (aiohttp on loopback, plain and TLS): what
it sends, that it patches only changes and at most once per interval, and that failures are counted,
logged and retried without raising."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from ivr.app.config import AppConfig
from ivr.app.deletion_cost import ANNOTATION, PATCHES, DeletionCostUpdater, PodDeletionCostParams
from ivr.app.service import Service

INTERVAL_S = 0.3
POD = "voicenav-7d9f-abcde"
NAMESPACE = "voicenav"


@dataclass
class Request:
    at: float  # loop time of arrival
    method: str
    path: str
    content_type: str
    authorization: str
    body: Any


@dataclass
class ApiServer:
    """A stand-in for the API server on a free loopback port; records every request."""

    tls: ssl.SSLContext | None = None
    status: int = 200  # what requests are answered with
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    def values(self) -> list[str]:
        return [r.body["metadata"]["annotations"][ANNOTATION] for r in self.requests]

    async def __aenter__(self) -> ApiServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls).start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.requests.append(
            Request(
                asyncio.get_running_loop().time(),
                request.method,
                request.path,
                request.headers.get("Content-Type", ""),
                request.headers.get("Authorization", ""),
                json.loads(raw) if raw else None,
            )
        )
        return web.json_response({"kind": "Pod"} if self.status == 200 else {"kind": "Status"}, status=self.status)


def _params(url: str, tmp_path: Path, **changes: object) -> PodDeletionCostParams:
    token = tmp_path / "token"
    if not token.exists():
        token.write_text("token-1\n")
    values: dict[str, object] = {
        "enabled": True,
        "pod_name": POD,
        "namespace": NAMESPACE,
        "api_url": url,
        "token_file": token,
        "ca_file": None,
        "min_interval_s": INTERVAL_S,
    }
    return PodDeletionCostParams.model_validate({**values, **changes})


async def _until(check: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.02)


def _counted(result: str) -> float:
    return PATCHES.labels(result)._value.get()


async def test_patches_its_pod_with_the_call_count_only_on_change(tmp_path: Path) -> None:
    calls = [0]
    async with ApiServer() as api:
        updater = DeletionCostUpdater(_params(api.url, tmp_path), lambda: calls[0])
        ok = _counted("ok")
        updater.start()
        try:
            await _until(lambda: updater.annotated == 0)  # a container restarted in place drops a stale cost
            first = api.requests[0]
            assert first.method == "PATCH"
            assert first.path == f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}"
            assert first.content_type == "application/merge-patch+json"
            assert first.authorization == "Bearer token-1"
            assert first.body == {"metadata": {"annotations": {ANNOTATION: "0"}}}
            # Three changes within one interval: one patch, with the last value.
            calls[0] = 1
            calls[0] = 2
            calls[0] = 3
            (tmp_path / "token").write_text("token-2\n")  # the kubelet rotated the token
            await _until(lambda: updater.annotated == 3)
            await asyncio.sleep(3 * INTERVAL_S)  # nothing changed since: nothing sent
            assert api.values() == ["0", "3"]
            assert api.requests[1].authorization == "Bearer token-2"
            calls[0] = 1
            await _until(lambda: updater.annotated == 1)
            assert api.values() == ["0", "3", "1"]
            gaps = [b.at - a.at for a, b in zip(api.requests, api.requests[1:], strict=False)]
            assert min(gaps) >= INTERVAL_S * 0.9, gaps  # at most one patch per interval
            assert _counted("ok") == ok + 3
        finally:
            await updater.aclose()


async def test_failures_are_counted_logged_once_and_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls = [2]
    async with ApiServer(status=403) as api:
        updater = DeletionCostUpdater(_params(api.url, tmp_path), lambda: calls[0])
        failed, ok = _counted("failed"), _counted("ok")
        with caplog.at_level(logging.INFO, logger="ivr.app.deletion_cost"):
            updater.start()
            try:
                await _until(lambda: len(api.requests) >= 3)  # refused, and tried again each interval
                assert updater.annotated is None and set(api.values()) == {"2"}
                assert _counted("failed") >= failed + 3 and _counted("ok") == ok
                api.status = 200
                await _until(lambda: updater.annotated == 2)
            finally:
                await updater.aclose()
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if "failed" in line]) == 1, lines  # not once per retry
    assert "403" in lines[0] and POD in lines[0]
    assert lines[-1] == f"pod-deletion-cost: patching {POD} works again"


async def test_an_unreachable_api_server_or_a_missing_token_is_a_counted_failure(tmp_path: Path) -> None:
    async with ApiServer() as api:
        url = api.url  # closed when the block ends: nothing listens there any more
    for params in (
        _params(url, tmp_path),
        _params("http://127.0.0.1:9", tmp_path, token_file=tmp_path / "missing"),
    ):
        updater = DeletionCostUpdater(params, lambda: 1)
        failed = _counted("failed")
        updater.start()
        try:
            await _until(lambda: _counted("failed") >= failed + 2)  # noqa: B023 - awaited in this iteration
            assert updater.annotated is None
        finally:
            await updater.aclose()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes.default.svc")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "apiserver.crt", tmp_path / "apiserver.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def test_tls_api_server_is_verified_against_the_configured_ca(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async with ApiServer(tls=tls) as api:
        trusted = DeletionCostUpdater(_params(api.url, tmp_path, ca_file=cert), lambda: 4)
        trusted.start()
        try:
            await _until(lambda: trusted.annotated == 4)
        finally:
            await trusted.aclose()
        assert api.values() == ["4"]
        # The system's CAs do not know this server: every attempt fails the handshake, none reaches it.
        failed = _counted("failed")
        untrusted = DeletionCostUpdater(_params(api.url, tmp_path, ca_file=None), lambda: 5)
        untrusted.start()
        try:
            await _until(lambda: _counted("failed") >= failed + 2)
        finally:
            await untrusted.aclose()
        assert api.values() == ["4"] and untrusted.annotated is None


async def test_the_service_reports_its_admitted_calls_until_it_stops(tmp_path: Path) -> None:
    async with ApiServer() as api:
        service = Service(AppConfig(pod_deletion_cost=_params(api.url, tmp_path)))
        assert service.deletion_cost is not None
        service.admission.open()
        service.start_pod_deletion_cost()
        await _until(lambda: api.values() == ["0"])
        assert service.admission.admit("sip") is None and service.admission.admit("webrtc") is None
        await _until(lambda: api.values() == ["0", "2"])
        await service.stop()
        service.admission.release("sip")
        await asyncio.sleep(3 * INTERVAL_S)
        assert api.values() == ["0", "2"]  # stopped with the service


def test_enabled_needs_the_pods_name_and_namespace() -> None:
    with pytest.raises(ValidationError, match="pod_name and namespace"):
        PodDeletionCostParams(enabled=True, namespace=NAMESPACE)
    assert Service(AppConfig()).deletion_cost is None  # off unless enabled
