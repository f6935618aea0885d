from __future__ import annotations

import pytest

from tests.chart.helm import run_script


@pytest.fixture(scope="session")
def tools() -> None:
    """Install the pinned tools once (instant when they are already there)."""
    run = run_script("install-tools.sh", timeout=1800)
    if run.returncode != 0:
        pytest.fail(f"install-tools.sh failed:\n{run.stdout}\n{run.stderr}")
