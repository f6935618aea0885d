"""The pod's network namespace, for a process the pod runner starts on the host.

In a pod, a server that binds 0.0.0.0 listens on the pod's IP. Here every pod shares the host's
network, so the runner puts this folder on PYTHONPATH with PDSTACK_POD_IP set, and Python imports
this module at start-up (in every child process too): a bind to the wildcard address becomes a
bind to the pod IP, for Python sockets (asyncio and uvicorn servers) and for ZeroMQ sockets
(`tcp://0.0.0.0:P` or `tcp://*:P`, e.g. the router's LMCache listener). Any other address is left
alone, so a server that binds 127.0.0.1 is not reachable at the pod IP, as in a real pod. Another
sitecustomize further down the path (the vLLM environment's start-up hook, say) is still run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

_POD_IP = os.environ.get("PDSTACK_POD_IP", "")
_HERE = Path(__file__).resolve().parent
_ZMQ_WILDCARD = re.compile(r"^tcp://(\*|0\.0\.0\.0):")


def _pod_address(address: Any, family: int) -> Any:
    """The address a wildcard bind gets inside the pod; anything else unchanged."""
    if not isinstance(address, tuple) or not address:
        return address
    host = address[0]
    if family == socket.AF_INET and host in ("", "0.0.0.0"):
        return (_POD_IP, *address[1:])
    if family == socket.AF_INET6 and host in ("", "::"):
        return (f"::ffff:{_POD_IP}", *address[1:])
    return address


def _patch_sockets() -> None:
    original_bind = socket.socket.bind

    def bind(self: socket.socket, address: Any) -> None:
        original_bind(self, _pod_address(address, self.family))

    socket.socket.bind = bind  # type: ignore[method-assign]


def _patch_zmq() -> None:
    """pyzmq's Socket.bind (where pyzmq is installed); asyncio sockets inherit it."""
    if importlib.util.find_spec("zmq") is None:
        return
    import zmq

    original_bind = zmq.Socket.bind

    def bind(self: Any, addr: str) -> Any:
        if isinstance(addr, str):
            addr = _ZMQ_WILDCARD.sub(f"tcp://{_POD_IP}:", addr)
        return original_bind(self, addr)

    zmq.Socket.bind = bind  # type: ignore[method-assign]


def _chain_next_sitecustomize() -> None:
    """Run the next sitecustomize.py on sys.path, which this module shadows."""
    for entry in sys.path:
        if not entry or Path(entry).resolve() == _HERE:
            continue
        candidate = Path(entry) / "sitecustomize.py"
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("_pdstack_next_sitecustomize", candidate)
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            return


if _POD_IP:
    _patch_sockets()
    _patch_zmq()
_chain_next_sitecustomize()
