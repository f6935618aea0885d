"""Pytest fixtures for the fake engine; import them in a conftest.py::

    from tests.doubles.fixtures import fake_engine_factory, lmcache_proxy_sink  # noqa: F401

    def test_x(fake_engine_factory):
        p = fake_engine_factory(role="prefill", ttft_ms=10)
        d = fake_engine_factory(role="decode")

Engines started through a factory are stopped when the test (or scope) ends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from tests.doubles.engine_parts.kv import decode_proxy_notif
from tests.doubles.engine_proc import FakeEngine, start_fake_engine, start_fake_engines


class EngineFleet:
    """Engines started for one scope; stops them all at the end."""

    def __init__(self) -> None:
        self.engines: list[FakeEngine] = []

    def __call__(self, **knobs: Any) -> FakeEngine:
        engine = start_fake_engine(**knobs)
        self.engines.append(engine)
        return engine

    def many(self, count: int, **knobs: Any) -> list[FakeEngine]:
        """Start ``count`` engines in parallel."""
        engines = start_fake_engines(count, **knobs)
        self.engines.extend(engines)
        return engines

    def stop_all(self) -> None:
        for engine in self.engines:
            engine.stop()
        self.engines.clear()


def make_fake_engine_fixture(scope: str = "function") -> Any:
    """Build a factory fixture with another scope, e.g. ``module`` to share engines."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload,untyped-decorator]
    def _factory() -> Iterator[EngineFleet]:
        fleet = EngineFleet()
        try:
            yield fleet
        finally:
            fleet.stop_all()

    return _factory


fake_engine_factory = make_fake_engine_fixture("function")


class ProxyNotifSink:
    """A ZMQ PULL socket on a free loopback port collecting LMCache ProxyNotif req_ids."""

    def __init__(self) -> None:
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self.port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.received: list[str] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop:
            if poller.poll(50):
                req_id = decode_proxy_notif(self._sock.recv())
                with self._cond:
                    self.received.append(req_id)
                    self._cond.notify_all()

    def wait_for(self, req_id: str, count: int, timeout: float = 5.0) -> int:
        """Wait until ``count`` notifications for ``req_id`` arrived; returns how many did."""
        with self._cond:
            self._cond.wait_for(lambda: self.received.count(req_id) >= count, timeout)
            return self.received.count(req_id)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self._sock.close(linger=0)
        self._ctx.term()


@pytest.fixture
def lmcache_proxy_sink() -> Iterator[ProxyNotifSink]:
    sink = ProxyNotifSink()
    try:
        yield sink
    finally:
        sink.close()
