"""The pod runner's "container runtime": what runs here for each image the chart uses.

An image is never pulled. Its family decides which local environment stands in for it and which
executables it provides, by the exact name or path the image has them under; a command the image
would not have fails the pod (as `exec: not found` would), and so does an unknown image.

- `vllm/vllm-openai`, `...vllm-cpu...`: `vllm` is the CPU vLLM venv (`.cache/vllm-venv`) or the
  vLLM CLI double;
- `lmcache/vllm-openai`: `/opt/venv/bin/vllm` the same; `/opt/venv/bin/lmcache_server` the
  LMCache server double (LMCache needs CUDA);
- `pdstack/pdstack-router`: `pdstack-router` is this checkout's router package;
- any image: `/bin/sh`, `sh`, `sed`, `cat`, `sleep` are the host's (base-image tools).

Engines run as real vLLM unless the pod's namespace carries the label
`podrunner.pdstack.io/engines=double`: then `vllm` is `tests.doubles.vllm_serve`, which checks
the arguments against the installed vLLM's own parser and serves the fake engine.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.podrunner.podspec import UnsupportedSpec

ROOT = Path(__file__).resolve().parents[3]
VLLM_VENV = Path(os.environ.get("PDSTACK_VLLM_VENV", ROOT / ".cache" / "vllm-venv"))
ENGINES_LABEL = "podrunner.pdstack.io/engines"
NETSHIM = Path(__file__).resolve().parent / "netshim"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_TOOLS = ("/bin/sh", "sh", "/bin/bash", "bash", "sed", "cat", "sleep", "true", "test")


@dataclass(frozen=True)
class Runtime:
    """How one container's process is started here."""

    argv_prefix: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    python_path: Sequence[Path] = ()


def _vllm_real() -> Runtime:
    return Runtime(
        argv_prefix=[str(VLLM_VENV / "bin" / "vllm")],
        env={
            # This node has no internet: the model comes from a volume, nothing is downloaded.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            # Pod IPs are loopback aliases here, so UCX (NIXL's transport) must use `lo`.
            "UCX_NET_DEVICES": "lo",
            # 2 shared cores: NIXL's progress thread must not busy-poll (scripts/engines/pyhooks).
            "NIXL_PTHR_DELAY_US": "100",
        },
        python_path=[ROOT / "scripts" / "engines" / "pyhooks"],
    )


def _vllm_double() -> Runtime:
    return Runtime(
        argv_prefix=[sys.executable, "-m", "tests.doubles.vllm_serve"],
        env={"PDSTACK_VLLM_PYTHON": str(VLLM_VENV / "bin" / "python")},
        python_path=[ROOT],
    )


def _lmcache_server_double() -> Runtime:
    return Runtime(
        argv_prefix=[sys.executable, "-m", "tests.doubles.lmcache_server"], python_path=[ROOT]
    )


def _router() -> Runtime:
    return Runtime(argv_prefix=[str(Path(sys.executable).parent / "pdstack-router")])


# (image pattern, {executable as the image has it: runtime factory taking `engines`})
_FAMILIES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (
        re.compile(r"^(docker\.io/)?lmcache/vllm-openai(:|@|$)"),
        {"/opt/venv/bin/vllm": "vllm", "vllm": "vllm", "/opt/venv/bin/lmcache_server": "lmcache"},
    ),
    (re.compile(r"(^|/)vllm/vllm-openai(:|@|$)|vllm-cpu"), {"vllm": "vllm"}),
    (re.compile(r"(^|/)pdstack/pdstack-router(:|@|$)"), {"pdstack-router": "router"}),
]


def runtime_for(image: str, executable: str, engines: str) -> Runtime:
    """The runtime for `executable` of `image`; UnsupportedSpec when the image lacks it."""
    for pattern, executables in _FAMILIES:
        if not pattern.search(image):
            continue
        kind = executables.get(executable)
        if kind == "vllm":
            return _vllm_double() if engines == "double" else _vllm_real()
        if kind == "lmcache":
            return _lmcache_server_double()
        if kind == "router":
            return _router()
        break
    else:
        raise UnsupportedSpec(f"no local runtime for image {image!r}")
    if executable in BASE_TOOLS:
        host = shutil.which(executable, path=BASE_PATH)
        if host:
            return Runtime(argv_prefix=[host])
    raise UnsupportedSpec(f'exec: "{executable}": executable file not found in image {image}')


def process_env(
    runtime: Runtime, container_env: Mapping[str, str], pod_ip: str, home: Path
) -> dict[str, str]:
    """The process's whole environment: image defaults, the container's env, the network shim."""
    env = {"PATH": BASE_PATH, "HOME": str(home), "LANG": "C.UTF-8", **runtime.env, **container_env}
    paths = [str(NETSHIM), *(str(p) for p in runtime.python_path)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PDSTACK_POD_IP"] = pod_ip
    return env
