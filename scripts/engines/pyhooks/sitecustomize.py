"""Start-up hook for vLLM engine processes: stop NIXL's progress thread from burning a core.

NIXL's Python API creates every agent with `pthrDelay = 0`, so the UCX progress thread
busy-polls: about one full core per engine, even when idle, which saturates a 2-core machine
before any request arrives. vLLM has no setting for it. When NIXL_PTHR_DELAY_US is set, this
hook (on PYTHONPATH, so Python imports it at start-up in every engine process) waits for NIXL's
compiled bindings to be imported and makes each new agent use that delay (microseconds) instead.
Turning the thread off altogether makes transfers hang; 100 us keeps them working at ~3% CPU.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

# The CUDA-flavoured wheels carry the same bindings; nixl-cu12 is the one installed here.
_BINDINGS = ("nixl_cu12._bindings", "nixl_cu13._bindings")


def _use_delay(bindings: ModuleType, delay_us: int) -> None:
    """Replace bindings.nixlAgent so every agent is created with `delay_us`."""
    create_agent: Callable[..., Any] = getattr(bindings, "nixlAgent")  # noqa: B009

    def agent_with_delay(name: str, config: Any, *args: Any, **kwargs: Any) -> Any:
        config.pthrDelay = delay_us
        return create_agent(name, config, *args, **kwargs)

    setattr(bindings, "nixlAgent", agent_with_delay)  # noqa: B010 (module attribute swap)


class _PatchNixlOnImport(importlib.abc.MetaPathFinder):
    """Finds the bindings like the normal path finder, then patches them once executed."""

    def __init__(self, delay_us: int) -> None:
        self.delay_us = delay_us

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _BINDINGS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        execute = loader.exec_module

        def exec_then_patch(module: ModuleType) -> None:
            execute(module)
            try:
                _use_delay(module, self.delay_us)
            except Exception as exc:  # never break the engine over a performance tweak
                print(f"pdstack sitecustomize: NIXL delay not applied: {exc}", file=sys.stderr)

        loader.exec_module = exec_then_patch
        return spec


def _install() -> None:
    raw = os.environ.get("NIXL_PTHR_DELAY_US", "").strip()
    if raw.isdigit():
        sys.meta_path.insert(0, _PatchNixlOnImport(int(raw)))


_install()
