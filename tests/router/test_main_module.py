"""`python -m pdrouter` is the router, as `pdstack-router` is (tests/harness starts it so too)."""

from __future__ import annotations

import subprocess
import sys


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdrouter", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_python_dash_m_pdrouter_is_the_router_command() -> None:
    done = run_module("--help")
    assert done.returncode == 0, done.stderr
    assert "--service-discovery" in done.stdout


def test_python_dash_m_pdrouter_rejects_a_bad_flag_like_the_command() -> None:
    done = run_module("--routing-logic", "nope")
    assert done.returncode == 2
    assert "routing" in done.stderr
