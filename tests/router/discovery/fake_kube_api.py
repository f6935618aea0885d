"""FakeKubeApiServer: a test double of the Kubernetes API server's pod list/watch endpoints.

It replays scripted responses over real HTTP on loopback, so the real `kubernetes_asyncio`
client code (request building, chunked watch streams, ERROR events) runs unchanged. Each list
request takes the next scripted PodList; each watch request takes the next scripted event
stream, which either closes at once or stays open until the client disconnects or the request's
`timeoutSeconds` passes, as the real server does. The last scripted reply of each kind repeats.
Every request is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures"


def load_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def load_events(name: str) -> list[bytes]:
    """A recorded watch stream: one JSON event per line, as the API server sends it."""
    return [line.encode() + b"\n" for line in (FIXTURES / name).read_text().splitlines() if line]


@dataclass
class WatchScript:
    """One watch response: these event lines, then close the stream or hold it open."""

    lines: list[bytes]
    hold_open: bool = False


@dataclass
class ErrorReply:
    """An HTTP error reply with a Kubernetes Status body."""

    status: int
    message: str = "scripted failure"


@dataclass
class RecordedRequest:
    kind: str  # "list" or "watch"
    path: str
    query: dict[str, str]
    authorization: str


@dataclass
class FakeKubeApiServer:
    """Scripted pod list/watch server (test double). Use `async with` to run it."""

    lists: list[dict[str, Any] | ErrorReply]
    watches: list[WatchScript | ErrorReply]
    requests: list[RecordedRequest] = field(default_factory=list)
    open_watches: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _closing: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeKubeApiServer:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._pods)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # ephemeral port: parallel runs never collide
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        assert self._runner is not None
        await self._runner.cleanup()

    def of_kind(self, kind: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == kind]

    @staticmethod
    async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll until `predicate()` holds (it may look at the server or the client side)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        is_watch = request.query.get("watch", "").lower() == "true"
        kind = "watch" if is_watch else "list"
        self.requests.append(
            RecordedRequest(
                kind, request.path, dict(request.query), request.headers.get("Authorization", "")
            )
        )
        script = self.watches if is_watch else self.lists
        if not script:
            return _status_reply(ErrorReply(500, f"no scripted {kind} response left"))
        reply = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(reply, ErrorReply):
            return _status_reply(reply)
        if isinstance(reply, WatchScript):
            return await self._stream(request, reply)
        return web.json_response(reply)

    async def _stream(self, request: web.Request, script: WatchScript) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        self.open_watches += 1
        try:
            for line in script.lines:
                await response.write(line)
            loop = asyncio.get_running_loop()
            ends_at = loop.time() + float(request.query.get("timeoutSeconds", "inf"))
            while script.hold_open and not self._closing and not _disconnected(request):
                if loop.time() >= ends_at:
                    break
                await asyncio.sleep(0.02)
        except ConnectionResetError:
            pass
        finally:
            self.open_watches -= 1
        return response


def _disconnected(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _status_reply(reply: ErrorReply) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": reply.message,
        "code": reply.status,
    }
    return web.json_response(body, status=reply.status)
