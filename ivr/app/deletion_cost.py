"""Tell Kubernetes which pods are cheap to remove: this pod's `controller.kubernetes.io/pod-deletion-cost`
annotation follows its number of active calls, so a scale-down removes idle pods before busy ones.

The updater patches its own pod through the API server with the pod's service-account token (re-read
for every patch: the kubelet rotates it). It patches at most once per `min_interval_s`, and only when
the count differs from what the annotation last took. A failed patch is counted and logged and tried
again at the next interval; calls never wait for it or see it fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Self

import aiohttp
from prometheus_client import Counter
from pydantic import BaseModel, Field, model_validator

log = logging.getLogger(__name__)

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# A patch that takes longer than this is abandoned (and counted); the next interval tries again.
REQUEST_TIMEOUT_S = 5.0

PATCHES = Counter(
    "voicenav_pod_deletion_cost_patches_total",
    "Patches of this pod's pod-deletion-cost annotation, by result (ok, failed)",
    ["result"],
)


class PodDeletionCostParams(BaseModel):
    enabled: bool = Field(
        False, description="keep this pod's pod-deletion-cost annotation at its number of active calls (Kubernetes)"
    )
    pod_name: str | None = Field(None, min_length=1, description="this pod's name (downward API metadata.name)")
    namespace: str | None = Field(
        None, min_length=1, description="this pod's namespace (downward API metadata.namespace)"
    )
    api_url: str = Field(
        "https://kubernetes.default.svc", pattern=r"^https?://", description="the Kubernetes API server"
    )
    token_file: Path = Field(SERVICE_ACCOUNT / "token", description="service-account token, read for every patch")
    ca_file: Path | None = Field(
        SERVICE_ACCOUNT / "ca.crt", description="CA of the API server's certificate; none: the system's CAs"
    )
    min_interval_s: float = Field(5.0, gt=0, description="at most one patch per this many seconds")

    @model_validator(mode="after")
    def _names_when_enabled(self) -> Self:
        if self.enabled and not (self.pod_name and self.namespace):
            raise ValueError("pod_deletion_cost needs pod_name and namespace when enabled")
        return self


class PatchFailed(Exception):
    """The API server did not take the patch (or could not be reached)."""


class DeletionCostUpdater:
    """Keeps the annotation at `active_calls()`; `start()` once, `aclose()` at shutdown."""

    def __init__(self, params: PodDeletionCostParams, active_calls: Callable[[], int]) -> None:
        assert params.pod_name and params.namespace  # the params' validator requires them when enabled
        self._params = params
        self._active_calls = active_calls
        self._url = f"{params.api_url.rstrip('/')}/api/v1/namespaces/{params.namespace}/pods/{params.pod_name}"
        self._annotated: int | None = None  # the value the API server last took
        self._failing = False
        self._ssl_context: ssl.SSLContext | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def annotated(self) -> int | None:
        return self._annotated

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pod-deletion-cost")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                calls = self._active_calls()
                if calls != self._annotated:
                    await self._update(http, calls)
                await asyncio.sleep(self._params.min_interval_s)

    def _ssl(self) -> ssl.SSLContext | bool:
        """TLS for an https API URL with the configured CA, loaded once it can be read."""
        if not self._params.api_url.startswith("https:"):
            return False
        if self._ssl_context is None:
            ca = self._params.ca_file
            try:
                self._ssl_context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
            except (OSError, ssl.SSLError) as exc:
                raise PatchFailed(f"cannot load the API server's CA {ca}: {exc}") from exc
        return self._ssl_context

    async def _update(self, http: aiohttp.ClientSession, calls: int) -> None:
        try:
            await self._patch(http, calls)
        except PatchFailed as exc:
            PATCHES.labels("failed").inc()
            if not self._failing:
                log.warning("pod-deletion-cost: patching %s failed, retrying: %s", self._params.pod_name, exc)
            self._failing = True
            return
        PATCHES.labels("ok").inc()
        if self._failing:
            log.info("pod-deletion-cost: patching %s works again", self._params.pod_name)
        self._failing = False
        self._annotated = calls

    async def _patch(self, http: aiohttp.ClientSession, calls: int) -> None:
        try:
            token = (await asyncio.to_thread(self._params.token_file.read_text)).strip()
        except OSError as exc:
            raise PatchFailed(f"cannot read the service-account token: {exc}") from exc
        # An annotation value is a string; a merge patch touches this one annotation only.
        body = json.dumps({"metadata": {"annotations": {ANNOTATION: str(calls)}}})
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"}
        try:
            async with http.patch(self._url, data=body, headers=headers, ssl=self._ssl()) as resp:
                if resp.status != 200:
                    detail = (await resp.text())[:200]
                    raise PatchFailed(f"API server answered {resp.status}: {detail}")
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise PatchFailed(f"{type(exc).__name__}: {exc}") from exc
