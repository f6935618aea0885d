"""CPU time and memory of a process tree, read from Linux /proc, and CPU list helpers."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()  # the command name may hold spaces


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it (uvicorn workers, the Rust router's threads' pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live descendants (their own threads included)."""
    user, system = tree_cpu_split(pid)
    return user + system


def tree_cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of `pid` and its live descendants: user space and the kernel."""
    user = system = 0
    for p in descendants(pid):
        try:
            fields = _stat_fields(p)
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / _TICK, system / _TICK


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its live descendants."""
    total = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def parse_cpus(spec: str) -> list[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6]."""
    cpus: list[int] = []
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return sorted(set(cpus))


def format_cpus(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def set_tree_affinity(pid: int, cpus: list[int]) -> None:
    """Pin `pid` and its descendants (all their threads) to `cpus`."""
    for p in descendants(pid):
        for task in Path(f"/proc/{p}/task").iterdir() if Path(f"/proc/{p}/task").exists() else []:
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except OSError:
                continue
