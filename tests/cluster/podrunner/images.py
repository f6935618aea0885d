"""The pod runner's "container runtime": what runs here for each image the chart uses.

An image is never pulled. Its family decides which local folders stand in for its bin folders
(first on PATH, as the image's own PATH is), so a container's command resolves as it would in
the image, directly or through a shell (`/bin/sh -c "... && exec vllm ..."`):

- `vllm/vllm-openai`, `...vllm-cpu...`: the CPU vLLM venv (`.cache/vllm-venv`: `vllm`, `python3`,
  `pip`);
- `lmcache/vllm-openai`: the same, as `/opt/venv/bin`, whose `lmcache_server` is the LMCache
  server double (LMCache needs CUDA);
- `.../pdstack-router`: this checkout's router venv, as `/opt/pdstack/bin` (Dockerfile.router).

In a namespace labelled `podrunner.pdstack.io/engines=double`, `vllm` is the `vllm serve` double
(tests/doubles/vllm_serve.py: vLLM's own option table, the fake engine behind it). A command the
image does not have fails the container (as `exec: not found` would), and so does an unknown
image. Of the host, only base-image tools (`sh`, `sed`, `sleep`, ...) are used by name.
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
BASE_TOOLS = frozenset({"sh", "bash", "env", "sed", "cat", "sleep", "true", "test", "echo"})
# What this machine's "nodes" give vLLM containers: no internet (the model comes from a volume),
# pod IPs that are loopback aliases (UCX must use `lo`), 2 shared cores (NIXL's progress thread
# must not busy-poll: scripts/engines/pyhooks).
ENGINE_NODE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "UCX_NET_DEVICES": "lo",
    "NIXL_PTHR_DELAY_US": "100",
}


@dataclass(frozen=True)
class Runtime:
    """One image's stand-in: its bin folders, the folders the image has them at, its env."""

    path: Sequence[Path]
    image_dirs: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    python_path: Sequence[Path] = ()

    def resolve(self, executable: str) -> str:
        """The file here that is the image's `executable`; UnsupportedSpec if it has none."""
        folder, _, name = executable.rpartition("/")
        if not folder or folder in self.image_dirs:
            for candidate in (d / name for d in self.path):
                if os.access(candidate, os.X_OK):
                    return str(candidate)
        if name in BASE_TOOLS:
            host = shutil.which(executable if folder else name, path=BASE_PATH)
            if host:
                return host
        raise UnsupportedSpec(f'exec: "{executable}": executable file not found in the image')

    def process_env(
        self, container_env: Mapping[str, str], pod_ip: str, home: Path
    ) -> dict[str, str]:
        """The process's whole environment: the image's PATH and env, the container's env, the
        network shim."""
        image_path = os.pathsep.join([*(str(p) for p in self.path), BASE_PATH])
        env = {"PATH": image_path, "HOME": str(home), "LANG": "C.UTF-8", **self.env}
        env.update(container_env)
        paths = [str(NETSHIM), *(str(p) for p in self.python_path)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PDSTACK_POD_IP"] = pod_ip
        return env


class ImageRuntimes:
    """The runtimes of the known image families; the doubles' launchers are written to `folder`."""

    def __init__(self, folder: Path) -> None:
        self.vllm_double = _launcher(folder / "vllm-double-bin", "vllm", "tests.doubles.vllm_serve")
        self.lmcache = _launcher(
            folder / "lmcache-bin", "lmcache_server", "tests.doubles.lmcache_server"
        )

    def for_image(self, image: str, engines: str) -> Runtime:
        """The stand-in for `image`; `engines` is the namespace's engines label (or "vllm")."""
        vllm_bin = VLLM_VENV / "bin"
        pyhooks = ROOT / "scripts" / "engines" / "pyhooks"
        engine_path = [self.vllm_double, vllm_bin] if engines == "double" else [vllm_bin]
        if re.search(r"^(docker\.io/)?lmcache/vllm-openai(:|@|$)", image):
            lmcache_path = [self.lmcache, *engine_path]
            return Runtime(lmcache_path, ["/opt/venv/bin"], ENGINE_NODE_ENV, [pyhooks])
        if re.search(r"(^|/)vllm/vllm-openai(:|@|$)|vllm-cpu", image):
            return Runtime(engine_path, [], ENGINE_NODE_ENV, [pyhooks])
        if re.search(r"(^|/)pdstack-router(:|@|$)", image):
            return Runtime([Path(sys.executable).parent], ["/opt/pdstack/bin"])
        raise UnsupportedSpec(f"no local runtime for image {image!r}")


def _launcher(folder: Path, name: str, module: str) -> Path:
    """`folder/name`: runs the double `module` with this checkout's Python; returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    launcher = folder / name
    launcher.write_text(
        "#!/bin/sh\n"
        f'export PYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        f'export PDSTACK_VLLM_PYTHON="{VLLM_VENV / "bin" / "python"}"\n'
        f'exec "{sys.executable}" -m {module} "$@"\n'
    )
    launcher.chmod(0o755)
    return folder
