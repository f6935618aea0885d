"""Launch the pdstack router (`.venv/bin/pdstack-router`) in front of local engines.

`start_router(port, backends, roles, log_path, "disagg_prefill")` returns a ManagedProcess whose
`wait_ready()` polls /ready (200 once every served model has a healthy path).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from procs import LOOPBACK, ROOT, ManagedProcess

ROUTER_BIN = Path(os.environ.get("PDSTACK_ROUTER_BIN", ROOT / ".venv" / "bin" / "pdstack-router"))


def start_router(
    port: int,
    backends: Sequence[str],
    roles: Sequence[str],
    log_path: Path,
    routing_logic: str,
    model: str = "tiny",
    extra_args: Sequence[str] = (),
) -> ManagedProcess:
    """Start the router on loopback `port` with static discovery of `backends`.

    `roles` gives prefill/decode/both per backend. The engine scrape interval is short so the
    router notices an engine that stops or comes back within a few seconds.
    """
    argv = [
        str(ROUTER_BIN),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--service-discovery",
        "static",
        "--static-backends",
        ",".join(backends),
        "--static-models",
        ",".join([model] * len(backends)),
        "--static-roles",
        ",".join(roles),
        "--routing-logic",
        routing_logic,
        "--engine-scrape-interval",
        "1",
        "--log-requests",
        *extra_args,
    ]
    return ManagedProcess(
        name=f"router:{port}", argv=argv, log_path=log_path, port=port, ready_path="/ready"
    ).start()
