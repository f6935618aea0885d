"""The tutorials as files: values files they name exist, YAML excerpts match them, every shell
block says whether the docs tests run it, links resolve, the dashboard is valid JSON."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.docs.markdown import ROOT, TUTORIALS, Block, all_blocks, blocks, tutorial_files

SHELL = {"bash", "sh", "shell", "console"}
EXPECTED = [f"{n:02d}" for n in range(9)]


def is_subset(excerpt: Any, full: Any, path: str = "") -> list[str]:
    """Where `excerpt` is not contained in `full` (empty when it is).

    Mappings: every key of the excerpt is in the file with a matching value. Lists: every
    excerpt item matches some item of the file's list (excerpts may leave items out).
    """
    if isinstance(excerpt, dict):
        if not isinstance(full, dict):
            return [f"{path or '/'}: a mapping in the excerpt, {type(full).__name__} in the file"]
        problems = []
        for key, value in excerpt.items():
            if key not in full:
                problems.append(f"{path}/{key}: not in the file")
            else:
                problems += is_subset(value, full[key], f"{path}/{key}")
        return problems
    if isinstance(excerpt, list):
        if not isinstance(full, list):
            return [f"{path}: a list in the excerpt, {type(full).__name__} in the file"]
        return [
            f"{path}[{i}]: matches no item of the file's list"
            for i, item in enumerate(excerpt)
            if not any(not is_subset(item, candidate) for candidate in full)
        ]
    return [] if excerpt == full else [f"{path}: {excerpt!r} in the excerpt, {full!r} in the file"]


def test_tutorials_00_to_08_exist() -> None:
    assert [p.name[:2] for p in tutorial_files()] == EXPECTED


def test_every_values_file_named_exists() -> None:
    missing = set()
    for path in tutorial_files():
        for name in re.findall(r"values/[\w.-]+\.yaml", path.read_text()):
            if not (ROOT / name).is_file():
                missing.add(f"{path.name}: {name}")
    assert not missing


@pytest.mark.parametrize(
    "block",
    [b for b in all_blocks() if b.kind == "values"],
    ids=lambda b: b.where,
)
def test_values_excerpt_is_part_of_its_file(block: Block) -> None:
    target = ROOT / block.arg
    assert target.is_file(), f"{block.where}: {block.arg} does not exist"
    excerpt = yaml.safe_load(block.text)
    problems = is_subset(excerpt, yaml.safe_load(target.read_text()))
    assert not problems, f"{block.where} differs from {block.arg}:\n" + "\n".join(problems)


def test_every_yaml_block_from_a_values_file_is_marked() -> None:
    # A YAML block with servingEngineSpec/routerSpec at the top is a values excerpt: it must
    # name its file so the test above compares it.
    unmarked = [
        b.where
        for b in all_blocks()
        if b.lang == "yaml"
        and b.kind != "values"
        and re.match(r"(servingEngineSpec|routerSpec|cacheserverSpec):", b.text)
    ]
    assert not unmarked


def test_every_shell_block_says_run_or_skip() -> None:
    undecided = [b.where for b in all_blocks() if b.lang in SHELL and b.kind not in {"run", "skip"}]
    assert not undecided, "mark each with <!-- docs-test: run --> or <!-- docs-test: skip (why) -->"
    no_reason = [b.where for b in all_blocks() if b.kind == "skip" and not b.arg.startswith("(")]
    assert not no_reason, "a skipped block says why: <!-- docs-test: skip (needs a cluster) -->"


def test_relative_links_resolve() -> None:
    broken = []
    for path in [*tutorial_files(), TUTORIALS / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target:
                continue
            if not (path.parent / target).resolve().exists():
                broken.append(f"{path.name} -> {target}")
    assert not broken


def test_grafana_dashboard_is_valid() -> None:
    dashboard = json.loads((TUTORIALS / "assets" / "grafana-pdstack.json").read_text())
    assert dashboard["uid"] == "pdstack-router"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs and all("pdstack_router_" in e for e in exprs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_tutorial_01_uses_make_demo_and_no_cluster() -> None:
    # "a reader new to the project can go from clone to a PD request by following 01 alone"
    text = (TUTORIALS / "01-quickstart-local.md").read_text()
    assert "make setup" in text and "make demo" in text
    runnable = [b for b in blocks(TUTORIALS / "01-quickstart-local.md") if b.kind == "run"]
    assert runnable and all(b.stack == "demo" for b in runnable)
    assert "kubectl" not in "".join(b.text for b in runnable)


def metric_names(text: str) -> set[str]:
    """pdstack_router_* names used in PromQL or prose, without histogram/counter suffixes."""
    names = set(re.findall(r"pdstack_router_[a-z0-9_]+", text))
    return {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in names}


def test_metric_names_are_listed_once_in_tutorial_06() -> None:
    # The dashboard's metrics must appear in the tutorial's table too (readers look there).
    text = (TUTORIALS / "06-observability.md").read_text()
    dashboard = (TUTORIALS / "assets" / "grafana-pdstack.json").read_text()
    documented = metric_names(text) | {
        f"pdstack_router_engine_{g}"
        for g in ("healthy", "in_flight", "qps", "waiting", "running", "kv_cache_usage")
    }
    documented |= {"pdstack_router_itl_seconds", "pdstack_router_e2e_seconds"}
    assert metric_names(dashboard) <= documented
