"""Fenced code blocks of the tutorials, with the docs-test marker written above each one.

A marker is an HTML comment on the last non-blank line before the fence:

    <!-- docs-test: run -->                          run from the repo root
    <!-- docs-test: run (against make demo) -->      run against the real `make demo` stack
    <!-- docs-test: run (against a fake stack) -->   run against fake engines + the router
    <!-- docs-test: run (against a cluster) -->      run by tests/cluster against a real API server
    <!-- docs-test: skip (needs a cluster) -->       not run here; the reason is required
    <!-- docs-test: values values/values-pd.yaml --> a YAML excerpt of that values file
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "tutorials"
# The address the tutorials use for a local router; tests put the real one in its place.
TUTORIAL_ROUTER = "http://127.0.0.1:8000"

_MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<kind>run|skip|values)\s*(?P<arg>.*?)\s*-->")
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and its marker (if any)."""

    path: Path
    line: int
    lang: str
    text: str
    kind: str  # "run", "skip", "values" or "" (no marker)
    arg: str  # "(against make demo)", "(needs a cluster)", "values/x.yaml", ...

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def stack(self) -> str:
        """Which local stack a run block needs: "", "demo", "fake" or "cluster"."""
        if "make demo" in self.arg:
            return "demo"
        if "against a cluster" in self.arg:
            return "cluster"
        if "fake stack" in self.arg:
            return "fake"
        return ""


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, lang, start = fence["indent"], fence["lang"], i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        kind, arg = _marker_before(lines, start)
        found.append(Block(path, start + 1, lang, "\n".join(body) + "\n", kind, arg))
    return found


def _marker_before(lines: list[str], fence_index: int) -> tuple[str, str]:
    j = fence_index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    match = _MARKER.search(lines[j]) if j >= 0 else None
    return (match["kind"], match["arg"]) if match else ("", "")


def tutorial_files() -> list[Path]:
    """The numbered tutorials, in reading order."""
    return sorted(TUTORIALS.glob("[0-9][0-9]-*.md"))


def all_blocks() -> list[Block]:
    return [b for path in tutorial_files() for b in blocks(path)]
