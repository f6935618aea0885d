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

import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

_POD_IP = os.environ.get("PDSTACK_POD_IP", "")
_HERE = Path(__file__).resolve().parent
_ZMQ_WILDCARD = re.compile(r"^tcp://(\*|0\.0\.0\.0):")
_ZMQ_MODULE = "zmq.sugar.socket"


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


def _patch_zmq(module: ModuleType) -> None:
    sock_class: Any = module.Socket
    original_bind = sock_class.bind

    def bind(self: Any, addr: str) -> Any:
        if isinstance(addr, str):
            addr = _ZMQ_WILDCARD.sub(f"tcp://{_POD_IP}:", addr)
        return original_bind(self, addr)

    sock_class.bind = bind


class _PatchZmqOnImport(importlib.abc.MetaPathFinder):
    """Finds pyzmq's Socket module like the normal finder, then patches its bind once loaded."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _ZMQ_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        execute = loader.exec_module

        def exec_then_patch(module: ModuleType) -> None:
            execute(module)
            _patch_zmq(module)

        loader.exec_module = exec_then_patch
        return spec


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
    sys.meta_path.insert(0, _PatchZmqOnImport())
_chain_next_sitecustomize()
