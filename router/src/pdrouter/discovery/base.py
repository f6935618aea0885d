"""The discovery interface: a source of the current set of ready engines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pdrouter.discovery.endpoint import Endpoint

EndpointsListener = Callable[[tuple[Endpoint, ...]], None]


class Discovery(Protocol):
    """Keeps the set of ready engines current and tells a listener whenever it changes.

    `start` must return quickly (initial listing included) and never block the event loop;
    `endpoints()` is the latest ready set, in a stable order.
    """

    async def start(self, on_change: EndpointsListener) -> None: ...

    async def stop(self) -> None: ...

    def endpoints(self) -> tuple[Endpoint, ...]: ...
