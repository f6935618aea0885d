"""Container probes as a kubelet runs them: httpGet, tcpSocket or exec, against the pod IP.

The probe's port may be a number or the name of one of the container's ports; the path, port
and timings are the rendered ones, so a chart that probes the wrong port or path never gets Ready.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.cluster.podrunner.podspec import Json, UnsupportedSpec


def resolve_port(port: Any, container: Json) -> int:
    """A probe or forward port given as a number or as a container port name."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise UnsupportedSpec(f"port name {port!r} is not a port of container {container['name']!r}")


@dataclass(frozen=True)
class ProbeTimings:
    """The probe's thresholds and periods (Kubernetes defaults where unset)."""

    initial_delay_s: float
    period_s: float
    timeout_s: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Json) -> ProbeTimings:
        return cls(
            initial_delay_s=float(probe.get("initialDelaySeconds", 0)),
            period_s=float(probe.get("periodSeconds", 10)),
            timeout_s=float(probe.get("timeoutSeconds", 1)),
            success_threshold=int(probe.get("successThreshold", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
        )


ExecRunner = Callable[[list[str], float], Awaitable[int]]


class ProbeCheck:
    """One probe of one container: `await check()` is True when it passes once."""

    def __init__(
        self,
        probe: Json,
        container: Json,
        pod_ip: str,
        session: aiohttp.ClientSession,
        run_exec: ExecRunner,
    ) -> None:
        self.timings = ProbeTimings.of(probe)
        self._session = session
        self._run_exec = run_exec
        self._exec: list[str] | None = None
        self._tcp: tuple[str, int] | None = None
        self._url: str | None = None
        self._headers: Mapping[str, str] = {}
        if "httpGet" in probe:
            get = probe["httpGet"]
            host = get.get("host") or pod_ip
            port = resolve_port(get["port"], container)
            scheme = str(get.get("scheme", "HTTP")).lower()
            self._url = f"{scheme}://{host}:{port}{get.get('path', '/')}"
            self._headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
        elif "tcpSocket" in probe:
            self._tcp = (
                probe["tcpSocket"].get("host") or pod_ip,
                resolve_port(probe["tcpSocket"]["port"], container),
            )
        elif "exec" in probe:
            self._exec = list(probe["exec"]["command"])
        else:
            raise UnsupportedSpec(f"probe kind {sorted(probe)} is not supported")

    def describe(self) -> str:
        return self._url or (
            f"tcp {self._tcp[0]}:{self._tcp[1]}" if self._tcp else f"exec {self._exec}"
        )

    async def check(self) -> bool:
        timeout = self.timings.timeout_s
        try:
            if self._url is not None:
                async with self._session.get(
                    self._url,
                    headers=self._headers,
                    ssl=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                    allow_redirects=False,
                ) as resp:
                    return 200 <= resp.status < 400
            if self._tcp is not None:
                _, writer = await asyncio.wait_for(asyncio.open_connection(*self._tcp), timeout)
                writer.close()
                return True
            assert self._exec is not None
            return await self._run_exec(self._exec, timeout) == 0
        except (OSError, aiohttp.ClientError, TimeoutError):
            return False


async def wait_for_success(check: ProbeCheck, stop: asyncio.Event) -> bool:
    """A startup probe: True once it passes, False after failureThreshold failures."""
    t = check.timings
    await _sleep_or_stop(t.initial_delay_s, stop)
    failures = 0
    while not stop.is_set():
        if await check.check():
            return True
        failures += 1
        if failures >= t.failure_threshold:
            return False
        await _sleep_or_stop(t.period_s, stop)
    return False


async def watch_state(
    check: ProbeCheck,
    stop: asyncio.Event,
    on_change: Callable[[bool], Awaitable[None]],
    initial: bool,
) -> None:
    """Readiness or liveness: report each switch after success/failure thresholds."""
    t = check.timings
    state, streak = initial, 0
    await _sleep_or_stop(t.initial_delay_s, stop)
    while not stop.is_set():
        ok = await check.check()
        streak = streak + 1 if ok != state else 0
        needed = t.success_threshold if ok else t.failure_threshold
        if ok != state and streak >= needed:
            state, streak = ok, 0
            await on_change(state)
        await _sleep_or_stop(t.period_s, stop)


async def _sleep_or_stop(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
