"""The option table of `vllm serve`, read from the installed vLLM's own argument parser.

Run with the vLLM environment's Python, it prints the table as JSON; `load_table()` (any
Python) returns it, generating it once per vLLM installation into .cache/vllm-cli-table/ (an
import of vLLM costs seconds of CPU, so the doubles that check arguments share one copy).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def dump() -> list[dict[str, Any]]:
    """Every option of `vllm serve`: its flags, how many values it takes, its choices."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    table = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        choices = None
        if action.choices is not None and all(isinstance(c, str) for c in action.choices):
            choices = sorted(action.choices)
        table.append(
            {
                "flags": list(action.option_strings),
                "nargs": action.nargs if action.nargs is not None else 1,
                "choices": choices,
            }
        )
    return table


def load_table() -> list[dict[str, Any]]:
    """The table for the vLLM environment at $PDSTACK_VLLM_PYTHON, cached on disk."""
    python = Path(os.environ.get("PDSTACK_VLLM_PYTHON", ROOT / ".cache/vllm-venv/bin/python"))
    stamp = python.parent.parent / ".pdstack-stamp"
    if not stamp.is_file():
        raise SystemExit(f"no vLLM environment at {python.parent.parent}: run make engines")
    key = hashlib.sha256(stamp.read_bytes()).hexdigest()[:16]
    cache = ROOT / ".cache" / "vllm-cli-table"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{key}.json"
    with (cache / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            out = subprocess.run(
                [str(python), __file__], check=True, capture_output=True, text=True
            ).stdout
            tmp = path.with_suffix(".tmp")
            tmp.write_text(out)
            tmp.replace(path)
    table: list[dict[str, Any]] = json.loads(path.read_text())
    return table


if __name__ == "__main__":
    json.dump(dump(), sys.stdout)
