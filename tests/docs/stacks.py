"""Local stacks the tutorials' shell blocks run against, and the block runner.

- `fake_pd_stack()`: two fake engines (test doubles, prefill + decode) behind pdstack-router in
  disagg_prefill mode: quick, for blocks that only need *a* router (benchmarks, metrics, errors).
- `demo_stack()`: the real `make demo` (scripts/engines/demo.sh: vLLM CPU engines), for
  tutorial 01, whose promise is exactly that script.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.docs.markdown import ROOT, TUTORIAL_ROUTER, Block
from tests.doubles.engine_proc import start_fake_engine
from tests.harness.router_proc import RouterProcess, free_port, static_args

DEMO_READY_TIMEOUT = 300.0  # first engine start on a busy 2-core box; typically 40-60 s
_DEMO_UP = re.compile(r"pdstack demo is up \((?P<mode>\w+)\)\. Router: (?P<url>http://\S+)")


@contextmanager
def fake_pd_stack() -> Iterator[str]:
    """A PD router over fake prefill and decode engines; yields the router's base URL."""
    with (
        start_fake_engine(models=["tiny"], role="prefill") as prefill,
        start_fake_engine(models=["tiny"], role="decode") as decode,
    ):
        args = [
            *static_args([prefill, decode], roles=["prefill", "decode"]),
            "--routing-logic",
            "disagg_prefill",
        ]
        with RouterProcess(args).start() as router:
            yield router.url


@contextmanager
def demo_stack(mode: str = "pd") -> Iterator[str]:
    """`make demo` as a user runs it (demo.sh), on a free port; stopped as by Ctrl-C."""
    env = {**os.environ, "PDSTACK_DEMO_PORT": str(free_port()), "MODE": mode}
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "engines" / "demo.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    up = threading.Event()
    url: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            match = _DEMO_UP.search(line)
            if match:
                url.append(match["url"])
                up.set()
        up.set()  # the demo exited

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        up.wait(DEMO_READY_TIMEOUT)
        assert url, "make demo never printed its router URL:\n" + "".join(output[-40:])
        yield url[0]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # demo.sh execs demo.py: this is Ctrl-C
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)


def run_block(block: Block, router_url: str = "", workdir: Path | None = None) -> str:
    """Run a shell block from the repo root with bash -e; return its output.

    No pipefail: a pipeline's status is its last command's, as in the reader's terminal.

    `router_url` replaces the tutorials' http://127.0.0.1:8000; with `workdir`, paths under
    results/ go there, so a test run leaves the repo's results/ alone.
    """
    script = block.text
    if router_url:
        script = script.replace(TUTORIAL_ROUTER, router_url)
    env = dict(os.environ)
    if workdir is not None:
        script = re.sub(r"(?<![\w/.-])results/", f"{workdir}/results/", script)
        env["RESULTS_DIR"] = str(workdir / "results" / "multi-round-qa")
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"{block.where} exited {result.returncode}:\n{script}\n{out}"
    return out
