"""What the chart renders for engines and router, as JSON for the GPU check (which has no helm).

    helm template pdstack charts/pdstack -f values/X.yaml | python3 chart_args.py NAME >> ...
    scripts/gpu/render-chart-args.sh    # both PD values files -> scripts/gpu/chart-engines.json

For each engine Deployment (by its `pdstack.io/role` label): the `vllm serve` arguments after the
model, the container's literal environment variables, and the parsed LMCache config file of its
ConfigMap; for the router: its arguments. The GPU check applies a short, printed list of
one-machine substitutions (ports, hosts, model path, GPU memory) on top and nothing else, and a
chart test renders this again and compares, so the check cannot drift from the chart.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = doc["spec"]["template"]["spec"]["containers"]
    return dict(containers[0])


def _plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def extract(docs: list[dict[str, Any]]) -> dict[str, Any]:
    lmcache: dict[str, Any] = {}
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and "lmcache.yaml" in doc.get("data", {}):
            role = doc["metadata"]["labels"]["pdstack.io/role"]
            lmcache[role] = yaml.safe_load(doc["data"]["lmcache.yaml"])
    engines: dict[str, Any] = {}
    router: dict[str, Any] = {}
    for doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        labels = doc["metadata"]["labels"]
        container = _container(doc)
        if labels.get("pdstack.io/component") == "router":
            router = {"args": [str(a) for a in container["args"]]}
            continue
        args = [str(a) for a in container["args"]]
        assert args[0] == "serve", args
        role = labels["pdstack.io/role"]
        engines[role] = {
            "model": args[1],
            "args": args[2:],
            "env": _plain_env(container),
            "lmcache_config": lmcache.get(role),
        }
    return {"engines": engines, "router": router}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    docs = [d for d in yaml.safe_load_all(sys.stdin) if isinstance(d, dict)]
    json.dump({argv[1]: extract(docs)}, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
