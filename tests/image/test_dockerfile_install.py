"""Replay Dockerfile.router's builder stage into a fresh venv and run the router from it.

This is the CI stand-in for a real image build (no container runtime or registry there): the same
COPY sources, the same pip commands against the same files, so a missing file, a dependency that
no longer resolves under router/constraints.txt or a broken console script fails here. Downloads
come through pip's cache in .cache/pip, the one deviation from the Dockerfile (PIP_NO_CACHE_DIR).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doubles.engine_proc import start_fake_engine
from tests.harness.router_proc import free_port
from tests.image.dockerfile import ROOT, Stage, parse

pytestmark = pytest.mark.slow

# Packages the image must never carry: dev tools and the engine stack.
FORBIDDEN = {"pytest", "ruff", "mypy", "hypothesis", "openai", "matplotlib", "torch", "vllm"}
FORBIDDEN |= {"lmcache", "sentence-transformers", "schemathesis"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _paths(command: str, venv: Path, wheels: Path) -> str:
    """Map the image's absolute paths into the temp dir."""
    command = command.replace("/opt/pdstack", str(venv))
    return re.sub(r"(?<![\w.])/wheels\b", str(wheels), command)


def _copy(args: str, src: Path) -> None:
    *sources, dest = shlex.split(args)
    assert not any(s.startswith("--from") for s in sources), "builder copies from the context only"
    target = src / dest
    for source in sources:
        origin = ROOT / source
        into = target / origin.name if dest.endswith("/") else target
        into.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(origin, into, ignore=skip)
        else:
            shutil.copy2(origin, into)


def replay_builder(stage: Stage, work: Path) -> Path:
    """Run the builder stage's COPY and RUN steps under `work`; return the venv it made."""
    src, venv, wheels, bin_dir = work / "src", work / "venv", work / "wheels", work / "bin"
    src.mkdir()
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)  # the image's `python` is 3.11, as ours
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(stage.env())
    env.pop("PIP_NO_CACHE_DIR", None)
    env["PIP_CACHE_DIR"] = str(ROOT / ".cache" / "pip")
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    for inst in stage.instructions:
        if inst.keyword == "COPY":
            _copy(inst.args, src)
        elif inst.keyword == "RUN":
            command = _paths(inst.args, venv, wheels)
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                check=False,
                cwd=src,
                env=env,
                capture_output=True,
                text=True,
                timeout=400,
            )
            assert result.returncode == 0, f"RUN {command}\n{result.stdout}\n{result.stderr}"
    return venv


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, stages = parse()
    builder = next(s for s in stages if s.name == "builder")
    return replay_builder(builder, tmp_path_factory.mktemp("image-replay"))


@pytest.fixture(scope="module")
def runtime_env(image_venv: Path) -> dict[str, str]:
    """The runtime stage's ENV with the venv in place of /opt/pdstack."""
    _, stages = parse()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDSTACK_ROUTER_")}
    for key, value in stages[-1].env().items():
        expanded = value.replace("$PATH", env.get("PATH", ""))
        env[key] = expanded.replace("/opt/pdstack", str(image_venv))
    env.pop("VIRTUAL_ENV", None)
    return env


@pytest.fixture
def image_router(image_venv: Path, runtime_env: dict[str, str]) -> Iterator[str]:
    """`pdstack-router` (the image's ENTRYPOINT) from the replayed venv, against a fake engine."""
    with start_fake_engine(models=["tiny"]) as engine:
        port = free_port()
        env = {**runtime_env, "PDSTACK_ROUTER_HOST": "127.0.0.1", "PDSTACK_ROUTER_PORT": str(port)}
        argv = ["pdstack-router", "--static-backends", engine.url, "--static-models", "tiny"]
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/tmp"
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"router from the image venv exited:\n{out}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("router from the image venv never became ready")


def _installed(venv: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    return {_norm(k): v for k, v in json.loads(out.stdout).items()}


def test_console_script_runs(image_venv: Path, runtime_env: dict[str, str]) -> None:
    result = subprocess.run(
        ["pdstack-router", "--help"],
        check=False,
        env=runtime_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--routing-logic" in result.stdout


def test_only_pinned_runtime_packages(image_venv: Path) -> None:
    installed = _installed(image_venv)
    assert not FORBIDDEN & installed.keys()
    pins = {}
    for line in (ROOT / "router" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.strip()
    unpinned = {n for n in installed if n not in pins} - {"pdstack-router"}
    assert not unpinned, f"installed but not pinned in router/constraints.txt: {sorted(unpinned)}"
    assert all(installed[n] == pins[n] for n in installed if n in pins)
    assert "pip" not in installed  # removed by the builder: nothing installs at run time


def test_tracing_can_be_switched_on(image_venv: Path, runtime_env: dict[str, str]) -> None:
    """The chart's `tracing` values only set OTEL_* variables: the image must have the SDK."""
    code = (
        "from pdrouter.tracing.provider import build_tracing;"
        "from pdrouter.tracing.target import ExportTarget;"
        "[build_tracing(ExportTarget(p, None)).shutdown() for p in ('grpc', 'http/protobuf')]"
    )
    env = {**runtime_env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    result = subprocess.run(
        ["python", "-c", code], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_serves_a_request(image_router: str) -> None:
    body = json.dumps({"model": "tiny", "prompt": "hello", "max_tokens": 4}).encode()
    request = urllib.request.Request(
        image_router + "/v1/completions", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert answer["choices"][0]["text"]


def test_healthcheck_command_passes(image_router: str, runtime_env: dict[str, str]) -> None:
    _, stages = parse()
    command = json.loads(stages[-1].all("HEALTHCHECK")[0].split("CMD", 1)[1])
    port = image_router.rsplit(":", 1)[1]
    env = {**runtime_env, "PDSTACK_ROUTER_PORT": port}
    # `python` resolves to the venv's interpreter through the image's PATH, as in the container.
    assert subprocess.run(command, check=False, env=env, timeout=10).returncode == 0
