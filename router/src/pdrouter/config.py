"""Router settings: one validated model, read from CLI flags, environment and a YAML file.

Precedence (highest first): command-line flag, environment variable `PDSTACK_ROUTER_<NAME>`,
`--config` YAML file, default. Every field becomes a flag `--<name-with-dashes>`, so `--help`
documents all of them from the field descriptions below.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pdrouter.discovery.endpoint import Role

ENV_PREFIX = "PDSTACK_ROUTER_"


class DiscoveryKind(enum.StrEnum):
    STATIC = "static"
    K8S = "k8s"


class RoutingLogic(enum.StrEnum):
    ROUNDROBIN = "roundrobin"
    LEAST_LOADED = "least_loaded"
    SESSION = "session"
    PREFIX_AWARE = "prefix_aware"
    KV_AWARE = "kv_aware"
    DISAGG_PREFILL = "disagg_prefill"


# Names other routers use for the same logic; accepted so their users' configs keep working.
ROUTING_ALIASES = {
    "disaggregated_prefill": "disagg_prefill",
    "round_robin": "roundrobin",
    "prefixaware": "prefix_aware",
    "leastloaded": "least_loaded",
}


class KvTransport(enum.StrEnum):
    NIXL = "nixl"
    LMCACHE = "lmcache"
    FIXED = "fixed"


class PdFallback(enum.StrEnum):
    NONE = "none"
    AGGREGATED = "aggregated"


class MissingKvPolicy(enum.StrEnum):
    FAIL = "fail"
    RECOMPUTE = "recompute"


class UpstreamClientKind(enum.StrEnum):
    AIOHTTP = "aiohttp"
    HTTPTOOLS = "httptools"


class KvHashAlgo(enum.StrEnum):
    """How the engines hash KV blocks (vLLM's --prefix-caching-hash-algo; llm-d's FNV)."""

    SHA256 = "sha256"
    SHA256_CBOR = "sha256_cbor"
    FNV64A_CBOR = "fnv64a_cbor"


class ScorerSpec(BaseModel):
    """One scorer of a scheduling profile: its name, weight and tier (0 decides; a later tier
    only orders candidates tied on every earlier one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    weight: float = 1.0
    tier: int = Field(0, ge=0, le=7)


class ProfileSpec(BaseModel):
    """A scheduling profile: filters -> weighted scorers -> picker."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    filters: list[str] = Field(default_factory=list)
    scorers: list[ScorerSpec] = Field(default_factory=list)
    picker: str = "max_score"


class LogFormat(enum.StrEnum):
    JSON = "json"
    TEXT = "text"


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class RouterSettings(BaseModel):
    """Everything the router can be told. Validated once at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- serving -------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    workers: int = Field(1, ge=1, le=256, description="Worker processes sharing the port.")
    log_format: LogFormat = Field(LogFormat.TEXT, description="Log line format: json or text.")
    log_level: str = Field("info", description="Log level (debug, info, warning, error).")
    log_requests: bool = Field(False, description="Log one line per finished request.")
    log_bodies: bool = Field(
        False, description="Log request bodies at debug level (prompts!). Off unless asked."
    )
    otlp_traces_endpoint: str = Field(
        "",
        description=(
            "OpenTelemetry: send traces over OTLP to this endpoint (grpc: http://host:4317, "
            "http/protobuf: http://host:4318/v1/traces). Empty: on only if "
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is set. Protocol, "
            "sampling and batching come from the standard OTEL_* variables."
        ),
    )

    # --- discovery -----------------------------------------------------------------------
    service_discovery: DiscoveryKind = Field(
        DiscoveryKind.STATIC, description="Where engines come from: static or k8s."
    )
    static_backends: list[str] = Field(
        default_factory=list, description="Comma-separated engine base URLs (static discovery)."
    )
    static_models: list[str] = Field(
        default_factory=list, description="Comma-separated model names, one per backend."
    )
    static_roles: list[str] = Field(
        default_factory=list,
        description="Comma-separated roles (prefill, decode, both), one per backend; default both.",
    )
    static_lmcache_init_ports: list[str] = Field(
        default_factory=list,
        description="Per backend, LMCache PD receiver init ports ('7300' or '7300;7301').",
    )
    static_lmcache_alloc_ports: list[str] = Field(
        default_factory=list,
        description="Per backend, LMCache PD receiver alloc ports ('7400' or '7400;7401').",
    )
    static_kv_events_ports: list[str] = Field(
        default_factory=list,
        description="Per backend, the KV-event publisher port (empty: none).",
    )
    static_kv_events_replay_ports: list[str] = Field(
        default_factory=list,
        description="Per backend, the KV-event replay port (empty: none).",
    )
    k8s_namespace: str = Field("default", description="Namespace to watch (k8s discovery).")
    k8s_label_selector: str = Field("", description="Label selector for engine pods.")
    k8s_port: int = Field(8000, ge=1, le=65535, description="Engine port if a pod does not say.")
    k8s_relist_interval: float = Field(
        60.0, gt=0, description="Seconds between full re-lists of pods (heals missed events)."
    )

    # --- engine health and load ----------------------------------------------------------
    engine_scrape_interval: float = Field(
        5.0, gt=0, description="Seconds between scrapes of every engine's /metrics and /health."
    )
    engine_scrape_timeout: float = Field(
        2.0, gt=0, description="Timeout of one /health probe (decides rotation)."
    )
    health_failure_threshold: int = Field(
        3,
        ge=1,
        description="Consecutive failed /health probes that take an engine out of rotation.",
    )
    engine_metrics_timeout: float = Field(
        5.0,
        gt=0,
        description="Timeout of one /metrics scrape (load only: a slow one never takes an "
        "engine out of rotation).",
    )
    engine_metrics_max_age: float = Field(
        0.0,
        ge=0,
        description="Load figures older than this many seconds are dropped; the engine is then "
        "ranked by the router's own in-flight count (0: three scrape intervals).",
    )
    engine_failure_window: float = Field(
        10.0,
        gt=0,
        description="Seconds a request failure charged to an engine counts as one unit of load, "
        "so a fast-failing engine does not look idle.",
    )
    request_stats_window: float = Field(
        60.0, gt=0, description="Seconds of request history kept for per-engine statistics."
    )

    # --- routing -------------------------------------------------------------------------
    routing_logic: RoutingLogic = Field(
        RoutingLogic.ROUNDROBIN,
        description="roundrobin, least_loaded, session, prefix_aware, kv_aware or disagg_prefill.",
    )
    session_key: str = Field(
        "x-user-id", description="Header (or body field) whose value pins a session."
    )
    prefix_chunk_chars: int = Field(
        128, ge=16, description="Prefix-aware routing hashes prompts in chunks of this many chars."
    )
    prefix_max_entries: int = Field(
        100_000, ge=100, description="Bound on remembered prefix chunks (LRU)."
    )
    aggregated_profile: str = Field(
        "", description="Scheduling profile of aggregated serving (default: --routing-logic)."
    )
    prefill_profile: str = Field(
        "",
        description="PD prefill profile: least_queue (default), kv_prefix, session, roundrobin "
        "or a --scheduling-profiles name.",
    )
    decode_profile: str = Field(
        "",
        description="PD decode profile: least_loaded (default), session, roundrobin or a "
        "--scheduling-profiles name.",
    )
    scheduling_profiles: dict[str, ProfileSpec] = Field(
        default_factory=dict,
        description="Named profiles {name: {filters, scorers: [{name, weight, tier}], picker}} "
        "(YAML in --config, or JSON).",
    )
    kv_prefix_weight: float = Field(
        8.0,
        ge=0,
        description="kv_prefix and kv_aware profiles: queued requests a fully cached prompt "
        "is worth.",
    )

    # --- KV-cache events -----------------------------------------------------------------
    kv_events: bool = Field(
        False,
        description="Subscribe to the engines' KV-cache events (ports from discovery) and "
        "tokenize prompts, for the kv_prefix scorers and --pd-min-uncached-tokens.",
    )
    kv_block_size: int = Field(16, ge=1, description="The engines' KV block size in tokens.")
    kv_hash_algo: KvHashAlgo = Field(
        KvHashAlgo.SHA256,
        description="The engines' block hash: sha256 or sha256_cbor (vLLM), fnv64a_cbor (llm-d).",
    )
    kv_hash_seed: str | None = Field(
        None, description="The engines' PYTHONHASHSEED (unset: they run without one)."
    )
    kv_index_max_blocks: int = Field(
        65_536, ge=16, description="Bound on indexed KV blocks per engine (oldest go first)."
    )
    kv_tokenize_timeout: float = Field(
        2.0, gt=0, description="Deadline of the engine /tokenize call for a prompt (s)."
    )

    # --- auth and limits -----------------------------------------------------------------
    api_key_env: str = Field(
        "", description="Env var with comma-separated router API keys; empty means no check."
    )
    engine_api_key_env: str = Field(
        "", description="Env var with the key sent to engines when the router checks its own."
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest total size of request headers (else 431)."
    )
    max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest request body accepted (else 413)."
    )
    admin_api_key_env: str = Field(
        "",
        description="Env var with comma-separated keys that /engines and /metrics require "
        "(Authorization: Bearer); empty leaves them open. Name the --api-key-env variable here "
        "to reuse the client keys.",
    )

    # --- admission (the edge) ------------------------------------------------------------
    request_header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a request's headers, from connecting (or "
        "from the first byte on a kept-alive connection); else the connection is closed.",
    )
    request_body_timeout: float = Field(
        60.0, gt=0, description="Seconds a client has to send a request's body (else 408)."
    )
    max_concurrent_requests: int = Field(
        2048,
        ge=0,
        description="Generation requests handled at once by the router (all workers "
        "together); more wait in a queue. 0: no limit.",
    )
    max_queued_requests: int = Field(
        512,
        ge=0,
        description="Requests waiting for a --max-concurrent-requests slot; beyond, 429.",
    )
    queue_timeout: float = Field(
        30.0, gt=0, description="Seconds a request may wait in the queue (else 429)."
    )
    max_inflight_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Request-body bytes the router holds at once (all workers together); "
        "requests beyond wait in the queue. 0: no limit.",
    )

    # --- timeouts and failure handling ---------------------------------------------------
    connect_timeout: float = Field(5.0, gt=0, description="Engine connect deadline (s).")
    first_byte_timeout: float = Field(
        300.0, gt=0, description="Deadline for an engine's response headers / first byte (s)."
    )
    idle_timeout: float = Field(
        120.0, gt=0, description="Deadline between two chunks of an engine's stream (s)."
    )
    non_stream_timeout: float = Field(
        1800.0,
        gt=0,
        description="Deadline for an engine's whole non-streamed answer, which vLLM sends "
        "all at once at the end (s).",
    )
    upstream_client: UpstreamClientKind = Field(
        UpstreamClientKind.HTTPTOOLS,
        description="HTTP client for engine traffic: httptools (lean, default) or aiohttp.",
    )
    breaker_failure_threshold: int = Field(
        5, ge=1, description="Consecutive failures that open an engine's circuit breaker."
    )
    breaker_cooldown: float = Field(
        10.0, gt=0, description="Seconds an open breaker waits before trial requests."
    )
    breaker_success_threshold: int = Field(
        2, ge=1, description="Successful trial requests that close a half-open breaker."
    )
    breaker_half_open_probes: int = Field(
        3, ge=1, description="Trial requests a half-open breaker lets through at once."
    )
    engine_tls_ca_file: str = Field(
        "",
        description="PEM CA bundle that https:// engine certificates are checked against "
        "(default: the system's trust store).",
    )
    engine_tls_verify: bool = Field(
        True,
        description="Verify https:// engines' certificates and host names (--no-engine-tls-"
        "verify: encrypt without checking; the engine API key may then reach an impostor).",
    )

    # --- shutdown ------------------------------------------------------------------------
    drain_delay: float = Field(
        0.0,
        ge=0,
        description="After SIGTERM, seconds /ready answers 503 while requests are still served "
        "(time for load balancers to stop sending).",
    )
    shutdown_grace_period: float = Field(
        30.0,
        ge=0,
        description="After the drain delay, seconds in-flight requests may take to finish; "
        "streams still running then end with an SSE error event and [DONE].",
    )

    # --- prefill/decode disaggregation ---------------------------------------------------
    kv_transport: KvTransport = Field(
        KvTransport.NIXL, description="KV-transfer protocol: nixl, lmcache or fixed."
    )
    pd_override_remote_host: bool = Field(
        False, description="Replace remote_host in kv_transfer_params with the prefill's host."
    )
    pd_min_prompt_tokens: int = Field(
        0, ge=0, description="Prompts estimated shorter than this skip prefill (0: never)."
    )
    pd_min_uncached_tokens: int = Field(
        0,
        ge=0,
        description="With --kv-events: prompts whose part not cached on the chosen decoder is "
        "shorter than this skip prefill (0: never).",
    )
    pd_fallback: PdFallback = Field(
        PdFallback.NONE, description="With no healthy prefill engine: none (503) or aggregated."
    )
    pd_on_missing_kv: MissingKvPolicy = Field(
        MissingKvPolicy.FAIL,
        description="Prefill answered without kv_transfer_params: fail or recompute on decode.",
    )
    pd_session_affinity: bool = Field(
        False, description="Pin a session (--session-key) to one (prefill, decode) pair."
    )
    prefill_timeout: float = Field(120.0, gt=0, description="Deadline for the prefill leg (s).")
    prefill_max_retries: int = Field(
        2, ge=0, description="Retries of a failed prefill on another prefill engine."
    )
    decode_max_retries: int = Field(
        1, ge=0, description="Retries of a decode that failed before its first byte."
    )
    pd_proxy_host: str = Field(
        "0.0.0.0",
        description="LMCache: ZMQ PULL listen address (the chart binds the pod IP).",
    )
    pd_proxy_port: int = Field(7500, ge=1, le=65535, description="LMCache: ZMQ PULL port.")
    pd_proxy_max_message_bytes: int = Field(
        4096,
        ge=64,
        le=1 << 20,
        description="LMCache: largest ZMQ message accepted (a ProxyNotif is ~60 bytes); a peer "
        "sending more is disconnected.",
    )
    pd_kv_wait_timeout: float = Field(
        30.0, gt=0, description="LMCache: deadline for the prefiller's KV-ready notifications."
    )

    @field_validator("static_backends", "static_models", "static_roles", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        return _csv(value)

    @field_validator(
        "static_lmcache_init_ports",
        "static_lmcache_alloc_ports",
        "static_kv_events_ports",
        "static_kv_events_replay_ports",
        mode="before",
    )
    @classmethod
    def _split_positional(cls, value: Any) -> Any:
        # One entry per backend, empty for backends without receiver ports: keep positions.
        if isinstance(value, str):
            return [item.strip() for item in value.split(",")] if value.strip() else []
        return value

    @field_validator("scheduling_profiles", mode="before")
    @classmethod
    def _parse_profiles(cls, value: Any) -> Any:
        # From a flag or the environment: a YAML (or JSON) mapping in one string.
        if isinstance(value, str):
            return yaml.safe_load(value) or {}
        return value

    @field_validator("routing_logic", mode="before")
    @classmethod
    def _alias_routing(cls, value: Any) -> Any:
        if isinstance(value, str):
            return ROUTING_ALIASES.get(value.strip().lower(), value.strip().lower())
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator("static_backends")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"backend URL {url!r} must start with http:// or https://")
        return [url.rstrip("/") for url in value]

    @model_validator(mode="after")
    def _check_static(self) -> RouterSettings:
        if self.service_discovery is DiscoveryKind.STATIC:
            n = len(self.static_backends)
            if n == 0:
                raise ValueError("static discovery needs --static-backends")
            if len(self.static_models) != n:
                raise ValueError(
                    f"--static-models has {len(self.static_models)} entries; "
                    f"--static-backends has {n}: give one model per backend"
                )
            for name in (
                "static_roles",
                "static_lmcache_init_ports",
                "static_lmcache_alloc_ports",
                "static_kv_events_ports",
                "static_kv_events_replay_ports",
            ):
                values = getattr(self, name)
                if values and len(values) != n:
                    flag = "--" + name.replace("_", "-")
                    raise ValueError(f"{flag} has {len(values)} entries; expected {n}")
            for role in self.static_roles:
                Role.parse(role)
            for name in ("static_kv_events_ports", "static_kv_events_replay_ports"):
                for port in getattr(self, name):
                    if port and not (port.isdigit() and 0 < int(port) < 65536):
                        raise ValueError(f"{_flag(name)}: {port!r} is not a port number")
        elif not self.k8s_label_selector:
            raise ValueError("k8s discovery needs --k8s-label-selector")
        if self.pd_min_uncached_tokens and not self.kv_events:
            raise ValueError("--pd-min-uncached-tokens needs --kv-events")
        if self.pd_min_uncached_tokens and self.pd_min_prompt_tokens:
            raise ValueError("give --pd-min-prompt-tokens or --pd-min-uncached-tokens, not both")
        if 0 < self.engine_metrics_max_age <= self.engine_scrape_interval:
            raise ValueError(
                f"--engine-metrics-max-age ({self.engine_metrics_max_age:g}) must be longer "
                f"than --engine-scrape-interval ({self.engine_scrape_interval:g})"
            )
        if 0 < self.max_inflight_body_bytes < self.max_body_bytes:
            raise ValueError(
                f"--max-inflight-body-bytes ({self.max_inflight_body_bytes}) must be 0 or at "
                f"least --max-body-bytes ({self.max_body_bytes}): a largest body must fit"
            )
        if self.engine_tls_ca_file and not Path(self.engine_tls_ca_file).is_file():
            raise ValueError(f"--engine-tls-ca-file {self.engine_tls_ca_file!r} is not a file")
        if self.kv_transport is KvTransport.LMCACHE and self.workers > 1:
            raise ValueError(
                "--kv-transport lmcache needs --workers 1: the prefillers' KV-ready "
                "notifications arrive on one ZMQ socket"
            )
        return self


def metrics_max_age(settings: RouterSettings) -> float:
    """--engine-metrics-max-age, or three scrape intervals when it is 0."""
    return settings.engine_metrics_max_age or 3 * settings.engine_scrape_interval


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser whose flags mirror RouterSettings; defaults stay unset (None)."""
    parser = argparse.ArgumentParser(
        prog="pdstack-router",
        description=(
            "OpenAI-compatible router for prefill/decode disaggregated vLLM. Every flag can "
            f"also be set as an environment variable {ENV_PREFIX}<FLAG_NAME> or in a YAML file "
            "given with --config (keys are flag names with underscores)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--config", help="YAML file with settings (lowest precedence but defaults)."
    )
    for name, info in RouterSettings.model_fields.items():
        annotation = info.annotation
        kwargs: dict[str, Any] = {"help": info.description or ""}
        default = info.get_default(call_default_factory=True)
        if isinstance(default, enum.Enum):
            default = default.value
        kwargs["help"] += f" (default: {default!r}; env {ENV_PREFIX}{name.upper()})"
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            choices = [m.value for m in annotation]
            if annotation is RoutingLogic:
                choices += list(ROUTING_ALIASES)
            kwargs["choices"] = choices
        elif _is_list(annotation):
            kwargs["metavar"] = "A,B,..."
        elif get_origin(annotation) is dict:
            kwargs["metavar"] = "YAML"
        parser.add_argument(_flag(name), dest=name, **kwargs)
    return parser


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, info in RouterSettings.model_fields.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if info.annotation is bool:
            values[name] = raw.strip().lower() in {"1", "true", "yes", "on"}
        else:
            values[name] = raw
    return values


def _file_values(path: str) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of setting names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


class SettingsError(Exception):
    """The settings are invalid; the message names the offending flag."""


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> RouterSettings:
    """Parse flags, environment and config file into validated settings."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    config_path = args.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        merged.update(_file_values(config_path))
    merged.update(_env_values(environ))
    merged.update(args)
    try:
        return RouterSettings(**merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            where = _flag(loc) if loc else "settings"
            if err["type"] == "extra_forbidden":
                lines.append(f"unknown setting {loc!r} (there is no flag {where})")
            else:
                lines.append(f"{where}: {err['msg']}")
        raise SettingsError("invalid router settings:\n  " + "\n  ".join(lines)) from None


def settings_as_env(settings: RouterSettings) -> dict[str, str]:
    """Settings as PDSTACK_ROUTER_* variables, so worker processes rebuild the same model."""
    env: dict[str, str] = {}
    for name in RouterSettings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, dict):
            value = json.dumps({k: v.model_dump() for k, v in value.items()})
        elif isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[ENV_PREFIX + name.upper()] = str(value)
    return env


__all__ = [
    "DiscoveryKind",
    "KvHashAlgo",
    "KvTransport",
    "LogFormat",
    "MissingKvPolicy",
    "PdFallback",
    "ProfileSpec",
    "RouterSettings",
    "RoutingLogic",
    "ScorerSpec",
    "SettingsError",
    "build_parser",
    "load_settings",
    "settings_as_env",
]
