from __future__ import annotations

import subprocess

import pytest

from tests.chart.helm import ROOT


@pytest.fixture(scope="session")
def tools() -> None:
    """Install the pinned tools once (instant when they are already there)."""
    run = subprocess.run(
        [str(ROOT / "scripts" / "install-tools.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if run.returncode != 0:
        pytest.fail(f"install-tools.sh failed:\n{run.stdout}\n{run.stderr}")
