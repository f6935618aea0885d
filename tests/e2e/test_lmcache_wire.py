"""The router's LMCache PD messages against LMCache's own classes (lmcache 0.5.6, installed next
to the CPU vLLM environment by scripts/engines/setup-lmcache-wire.sh; it imports on CPU).

- ProxyNotif: LMCache's msgspec class decodes what the fake engine sends, and the router decodes
  what LMCache's class encodes.
- disagg_spec: the keys the router sends are the ones LMCache's vLLM adapter reads (from its
  source: `req_disagg_spec["..."]`), they are fields of its DisaggSpec, and the ports are lists
  (its PD backend indexes them by TP rank). `ret_first_tok` is answered with `first_tok`.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from pdrouter.pd.transports.lmcache_notify import notified_request_id
from pdrouter.pd.transports.lmcache_shape import prefill_body

from tests.doubles.engine_parts.kv import encode_proxy_notif
from tests.e2e.conftest import ROOT, engines
from tests.router.pd.test_transports import request

PROBE = r"""
import ast, importlib.util, json, re, sys
import msgspec
from lmcache.v1.storage_backend.pd_backend import ProxyNotif
inp = json.load(sys.stdin)
src = open(importlib.util.find_spec("lmcache.integration.vllm.vllm_v1_adapter").origin).read()
fields, required = [], []
for node in ast.walk(ast.parse(src)):
    if isinstance(node, ast.ClassDef) and node.name == "DisaggSpec":
        for item in node.body:
            if isinstance(item, ast.AnnAssign):
                fields.append(item.target.id)
                if item.value is None:
                    required.append(item.target.id)
print(json.dumps({
    "decoded": msgspec.msgpack.decode(bytes.fromhex(inp["fake"]), type=ProxyNotif).req_id,
    "encoded": msgspec.msgpack.encode(ProxyNotif(req_id=inp["req_id"])).hex(),
    "fields": fields,
    "required": required,
    "reads": sorted(set(re.findall(r'req_disagg_spec\["(\w+)"\]', src))),
    "optional_reads": sorted(set(re.findall(r'req_disagg_spec\.get\("(\w+)"', src))),
    "answers_first_tok": '"ret_first_tok" in' in src and '"first_tok":' in src,
}))
"""


def lmcache_probe(inp: dict[str, Any]) -> dict[str, Any]:
    python = engines.ensure_vllm()
    subprocess.run([str(ROOT / "scripts" / "engines" / "setup-lmcache-wire.sh")], check=True)
    target = ROOT / ".cache" / "lmcache-0.5.6-wire"
    run = subprocess.run(
        [str(python), "-c", PROBE],
        input=json.dumps(inp),
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def test_router_messages_match_lmcache_classes() -> None:
    body = prefill_body(
        request(), [1, 2, 3], "pdstack-ab-1", "10.0.0.9", [7300, 7301], [7400, 7401]
    )
    spec = body["kv_transfer_params"]["disagg_spec"]
    got = lmcache_probe({"fake": encode_proxy_notif("pdstack-ab-1").hex(), "req_id": "r-2"})
    assert got["decoded"] == "pdstack-ab-1"  # LMCache reads the fake's notification
    assert notified_request_id(bytes.fromhex(got["encoded"])) == "r-2"  # we read LMCache's
    assert set(got["reads"]) <= set(spec), f"LMCache reads {got['reads']}, we send {sorted(spec)}"
    assert set(spec) <= set(got["fields"]), f"unknown keys for DisaggSpec: {sorted(spec)}"
    # receiver_id is derived by the adapter; everything else without a default is sent
    assert set(got["required"]) - {"receiver_id"} <= set(spec)
    assert all(isinstance(spec[k], list) for k in ("receiver_init_port", "receiver_alloc_port"))
    assert body["kv_transfer_params"]["ret_first_tok"] is True and got["answers_first_tok"]
