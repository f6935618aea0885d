"""Knobs of the fake engine: CLI flags at start, ``POST /admin/config`` to change them live."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any

from .faults import FAULT_MODES, parse_fault_list

ROLES = ("both", "prefill", "decode")
CHAT_DELTAS = ("content", "reasoning", "reasoning_content", "tool_calls")
LMCACHE_PD_ROLES = ("", "sender", "receiver")
FAILURE_POLICIES = ("fail", "recompute")


@dataclass
class Knobs:
    """Everything a test may tune. Field names are the JSON keys of ``/admin/config``."""

    models: list[str] = field(default_factory=lambda: ["tiny"])
    role: str = "both"  # informational only: any engine answers any request kind
    ttft_ms: float = 0.0  # time to first token (prefill time)
    itl_ms: float = 0.0  # inter-token latency
    output_tokens: int = 16  # used when the request has no max_tokens
    max_output_tokens: int = 0  # cap on generated tokens (finish_reason "stop"); 0 = none
    eos_after: int = 0  # stop with finish_reason "stop" after N tokens unless ignore_eos; 0 = never
    max_model_len: int = 4096
    max_num_seqs: int = 256  # running slots; requests beyond wait (vllm:num_requests_waiting)
    block_size: int = 16
    kv_capacity_tokens: int = 262144  # for kv_cache_usage_perc and the prefix-cache LRU size
    engine_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    tp_size: int = 1  # NIXL params' tp_size and the number of LMCache notifications
    side_channel_host: str = "127.0.0.1"  # remote_host in NIXL params
    kv_lease_seconds: float = 30.0  # how long a prefill holds KV for a decode to pull
    kv_load_failure_policy: str = "fail"  # decode side when the pull fails
    kv_transfer_ms: float = 0.0  # decode TTFT when the KV was pulled (instead of ttft_ms)
    kv_pull_timeout_s: float = 5.0
    lmcache_proxy_host: str = "127.0.0.1"  # where the prefiller PUSHes ProxyNotif
    lmcache_proxy_port: int = 0  # 0 = not configured: no notifications are sent
    lmcache_notify_delay_ms: float = 0.0
    # "sender": like an LMCache 0.5.6 PD prefiller, a generation request without disagg_spec
    # kills the engine (500, then the process exits); "" or "receiver": no such check.
    lmcache_pd_role: str = ""
    legacy_metrics: bool = False  # old names: vllm:gpu_cache_usage_perc, gpu_prefix_cache_*
    coalesce_chunks: bool = False  # itl 0: send a whole stream in one write (not engine-like)
    chat_delta: str = "content"  # what chat stream deltas carry (CHAT_DELTAS)
    split_first_token: bool = False  # the first token's event in two writes, split in its text
    metrics_override: dict[str, float] = field(default_factory=dict)  # metric name -> value
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode -> options

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, changes: dict[str, Any]) -> Knobs:
        """A validated copy with ``changes`` applied; raises ValueError naming the bad key."""
        new = copy.deepcopy(self)
        names = {f.name: f for f in dataclasses.fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise ValueError(f"unknown knob {key!r}")
            current = getattr(self, key)
            setattr(new, key, _coerce(key, current, value))
        new.check()
        return new

    def check(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if self.chat_delta not in CHAT_DELTAS:
            raise ValueError(f"chat_delta must be one of {CHAT_DELTAS}")
        if self.lmcache_pd_role not in LMCACHE_PD_ROLES:
            raise ValueError(f"lmcache_pd_role must be one of {LMCACHE_PD_ROLES}")
        if self.kv_load_failure_policy not in FAILURE_POLICIES:
            raise ValueError(f"kv_load_failure_policy must be one of {FAILURE_POLICIES}")
        if not self.models:
            raise ValueError("models must not be empty")
        if self.block_size < 1 or self.max_num_seqs < 1 or self.max_model_len < 2:
            raise ValueError("block_size, max_num_seqs must be >= 1 and max_model_len >= 2")
        for mode in self.faults:
            if mode not in FAULT_MODES:
                raise ValueError(f"unknown fault mode {mode!r}")


_HELP = {
    "role": "informational only: any engine answers any request kind",
    "ttft_ms": "time to first token (prefill time)",
    "itl_ms": "inter-token latency",
    "output_tokens": "used when the request has no max_tokens",
    "max_output_tokens": 'cap on generated tokens (finish_reason "stop"); 0 = none',
    "eos_after": 'stop with finish_reason "stop" after N tokens unless ignore_eos; 0 = never',
    "max_num_seqs": "running slots; requests beyond wait (vllm:num_requests_waiting)",
    "kv_capacity_tokens": "for kv_cache_usage_perc and the prefix-cache LRU size",
    "tp_size": "NIXL params' tp_size and the number of LMCache notifications",
    "side_channel_host": "remote_host in NIXL params",
    "kv_lease_seconds": "how long a prefill holds KV for a decode to pull",
    "kv_load_failure_policy": "fail|recompute: decode side when the KV pull fails",
    "kv_pull_timeout_s": "decode side: timeout of the KV pull from the prefill engine",
    "lmcache_notify_delay_ms": "delay between the prefill answer and its ProxyNotif pushes",
    "models": "served model names",
    "kv_transfer_ms": "decode TTFT when the KV was pulled (instead of ttft_ms)",
    "lmcache_proxy_host": "where the prefiller PUSHes ProxyNotif",
    "lmcache_proxy_port": "0 = not configured: no notifications are sent",
    "lmcache_pd_role": "sender: a generation request without disagg_spec kills the engine, "
    "like an LMCache 0.5.6 PD prefiller",
    "legacy_metrics": "old names: vllm:gpu_cache_usage_perc, gpu_prefix_cache_*",
    "coalesce_chunks": "itl 0: send a whole stream in one write (not engine-like)",
    "chat_delta": "chat stream deltas carry content, reasoning, reasoning_content or tool_calls",
    "split_first_token": "send the first token's SSE event in two writes, split inside its text",
    "metrics_override": "metric name -> value",
    "faults": "mode -> options",
    "engine_id": "engine id in NIXL params (default: a random uuid)",
    "block_size": "prefix-cache and KV block size in tokens",
    "max_model_len": "context length; longer requests get 400",
}


def _coerce(key: str, current: Any, value: Any) -> Any:
    if key == "models":
        if isinstance(value, str):
            value = [m.strip() for m in value.split(",") if m.strip()]
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            raise ValueError("models must be a list of names or a comma list")
        return value
    if key == "faults":
        if isinstance(value, (str, list)):
            specs = parse_fault_list(value if isinstance(value, str) else ",".join(value))
            return {s.mode: s.options() for s in specs}
        if not isinstance(value, dict):
            raise ValueError("faults must be an object mode -> options")
        return {str(k): dict(v or {}) for k, v in value.items()}
    if key == "metrics_override":
        if not isinstance(value, dict):
            raise ValueError("metrics_override must be an object")
        return {str(k): float(v) for k, v in value.items()}
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be a boolean")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"{key} must be an integer")
        return int(value)
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.doubles.fake_engine",
        description="Fake vLLM engine (test double): OpenAI API, /metrics, NIXL and LMCache "
        "PD emulation, fault injection. Every knob is also live-tunable via POST /admin/config.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--model", action="append", help="served model name (repeatable or comma list)")
    p.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (and --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        help="active fault, e.g. 'http_error;status=503;count=2' (repeatable)",
    )
    defaults = Knobs()
    for f in dataclasses.fields(Knobs):
        if f.name in ("models", "faults", "metrics_override"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        text = _HELP.get(f.name, "")
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", default=None, help=text)
        elif f.name == "engine_id":
            p.add_argument(flag, default=None, help=text)
        else:
            p.add_argument(flag, type=type(default), default=None, help=f"{text} [{default}]")
    return p


def knobs_from_args(args: argparse.Namespace) -> Knobs:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(Knobs):
        value = getattr(args, f.name, None)
        if value is not None and f.name not in ("models", "faults", "metrics_override"):
            changes[f.name] = value
    if args.model:
        changes["models"] = ",".join(args.model)
    if args.fault:
        changes["faults"] = ",".join(args.fault)
    return Knobs().updated(changes)
