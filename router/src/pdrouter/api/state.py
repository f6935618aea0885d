"""Application state: built once in the lifespan, handed to whoever needs it (no globals)."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from pdrouter.api.auth import ApiKeyCheck
from pdrouter.config import (
    DiscoveryKind,
    PdFallback,
    RouterSettings,
    RoutingLogic,
    UpstreamClientKind,
    metrics_max_age,
)
from pdrouter.discovery.base import Discovery
from pdrouter.discovery.endpoint import Endpoint
from pdrouter.discovery.static import StaticDiscovery, parse_static_endpoints
from pdrouter.kvcache.hashing import BlockHasher
from pdrouter.kvcache.index import KvBlockIndex
from pdrouter.kvcache.metrics import KvIndexCollector, KvRequestMetrics
from pdrouter.kvcache.subscriber import KvEventSubscriber, StreamStats, followed_roles
from pdrouter.pd.transports import prefill_is_exclusive
from pdrouter.proxy.aggregated import AggregatedProxy
from pdrouter.proxy.client import EngineClient, UpstreamClient
from pdrouter.proxy.prompt_kv import PromptKv
from pdrouter.proxy.tls import engine_ssl_context
from pdrouter.scheduling.profiles import aggregated_profile
from pdrouter.scheduling.scorers.kv_prefix import KvPrefix
from pdrouter.stats.breaker import BreakerPolicy, CircuitBreaker
from pdrouter.stats.engine_state import EnginePool, EngineState
from pdrouter.stats.router_metrics import RouterMetrics
from pdrouter.stats.scraper import EngineScraper, ProbeSettings
from pdrouter.tracing.provider import Tracing, build_tracing
from pdrouter.tracing.target import export_target

log = logging.getLogger(__name__)
_FORGET_RETRY_S = 1.0


def _keys_from_env(name: str, flag: str = "--api-key-env") -> list[str]:
    if not name:
        return []
    raw = os.environ.get(name)
    if raw is None:
        raise ValueError(f"{flag} names {name}, which is not set")
    return [k.strip() for k in raw.split(",") if k.strip()]


@dataclass
class KvParts:
    """The KV-event index and what feeds and reads it (with --kv-events)."""

    index: KvBlockIndex
    prompt: PromptKv
    # None in a worker process: the control plane follows the engines' streams for all.
    subscriber: KvEventSubscriber | None
    stats: StreamStats


def build_kv(
    settings: RouterSettings,
    client: EngineClient,
    metrics: RouterMetrics,
    pool: EnginePool,
    follow: bool,
) -> KvParts | None:
    if not settings.kv_events:
        return None
    index = KvBlockIndex(settings.kv_index_max_blocks)
    hasher = BlockHasher(settings.kv_hash_algo, settings.kv_block_size, settings.kv_hash_seed)
    subscriber = KvEventSubscriber(index, hasher, followed_roles(settings)) if follow else None
    parts = KvParts(
        index=index,
        prompt=PromptKv(
            client, hasher, index, settings.kv_tokenize_timeout, KvRequestMetrics(metrics.registry)
        ),
        subscriber=subscriber,
        stats=subscriber.stats if subscriber is not None else StreamStats(),
    )

    def name(engine_id: str) -> str:
        state = pool.get(engine_id)
        return state.endpoint.display_name if state is not None else engine_id

    metrics.add_collector(KvIndexCollector(index, lambda: parts.stats, name))
    return parts


@dataclass
class AppState:
    """Everything a request needs, wired together."""

    settings: RouterSettings
    pool: EnginePool
    metrics: RouterMetrics
    client: EngineClient
    discovery: Discovery
    scraper: EngineScraper
    auth: ApiKeyCheck
    admin_auth: ApiKeyCheck  # /engines and /metrics
    aggregated: AggregatedProxy
    scrape: bool = True  # False in a worker: the control plane scrapes for all workers
    kv: KvParts | None = None
    tracing: Tracing | None = None  # None: tracing is off

    @property
    def pd_mode(self) -> bool:
        return self.settings.routing_logic is RoutingLogic.DISAGG_PREFILL

    def model_ready(self, model: str) -> tuple[bool, str]:
        """Aggregated: some decode-capable engine is routable. PD: a prefill path and a decode
        path are routable, or a configured fallback covers a missing prefill path."""
        engines = [s for s in self.pool.for_model(model) if s.in_service]
        decode = any(s.endpoint.role.can_decode for s in engines)
        if not self.pd_mode:
            return (bool(engines), "ok" if engines else "no healthy engine")
        prefill = any(s.endpoint.role.can_prefill for s in engines)
        if not decode:
            return False, "no healthy decode engine"
        if prefill:
            return True, "ok"
        if self.settings.pd_fallback is PdFallback.AGGREGATED:
            return True, "no healthy prefill engine; aggregated fallback"
        return False, "no healthy prefill engine"


def build_discovery(settings: RouterSettings) -> Discovery:
    if settings.service_discovery is DiscoveryKind.STATIC:
        return StaticDiscovery(
            parse_static_endpoints(
                settings.static_backends,
                settings.static_models,
                settings.static_roles,
                settings.static_lmcache_init_ports,
                settings.static_lmcache_alloc_ports,
                settings.static_kv_events_ports,
                settings.static_kv_events_replay_ports,
            )
        )
    from pdrouter.discovery.k8s import K8sPodDiscovery

    return K8sPodDiscovery(
        namespace=settings.k8s_namespace,
        label_selector=settings.k8s_label_selector,
        default_port=settings.k8s_port,
        relist_interval_s=settings.k8s_relist_interval,
    )


def engine_api_key(settings: RouterSettings) -> str:
    """The key the router sends engines (requests and probes), or ''."""
    return os.environ.get(settings.engine_api_key_env, "") if settings.engine_api_key_env else ""


def breaker_policy(settings: RouterSettings) -> BreakerPolicy:
    return BreakerPolicy(
        failure_threshold=settings.breaker_failure_threshold,
        cooldown=settings.breaker_cooldown,
        success_threshold=settings.breaker_success_threshold,
        half_open_probes=settings.breaker_half_open_probes,
    )


def build_scraper(
    settings: RouterSettings, pool: EnginePool, metrics: RouterMetrics
) -> EngineScraper:
    """The health and load prober of the process that owns engine state."""
    key = engine_api_key(settings)

    def on_probe(state: EngineState, probe: str, outcome: str) -> None:
        metrics.scrapes.labels(state.endpoint.display_name, probe, outcome).inc()

    return EngineScraper(
        pool,
        ProbeSettings(
            interval=settings.engine_scrape_interval,
            health_timeout=settings.engine_scrape_timeout,
            failure_threshold=settings.health_failure_threshold,
            metrics_timeout=settings.engine_metrics_timeout,
            metrics_max_age=metrics_max_age(settings),
            failure_window=settings.engine_failure_window,
        ),
        {"authorization": f"Bearer {key}"} if key else None,
        on_probe,
        engine_ssl_context(settings.engine_tls_ca_file, settings.engine_tls_verify),
    )


def build_client(settings: RouterSettings) -> EngineClient:
    tls = engine_ssl_context(settings.engine_tls_ca_file, settings.engine_tls_verify)
    if settings.upstream_client is UpstreamClientKind.HTTPTOOLS:
        from pdrouter.proxy.rawclient import RawUpstreamClient

        return RawUpstreamClient(
            settings.connect_timeout, settings.first_byte_timeout, settings.idle_timeout, tls
        )
    return UpstreamClient(
        settings.connect_timeout, settings.first_byte_timeout, settings.idle_timeout, tls
    )


def build_state(
    settings: RouterSettings,
    discovery: Discovery | None = None,
    control_socket: str | None = None,
) -> AppState:
    """Wire the application. With `control_socket`, this is one of several worker processes:
    engines, health, load and breaker state come from the control plane at that socket."""
    follower = None
    if control_socket is not None:
        from pdrouter.workers.follower import ControlPlaneFollower

        follower = ControlPlaneFollower(control_socket)
        pool = EnginePool(follower.new_breaker, settings.request_stats_window)
        follower.pool = pool
        discovery = follower
    else:
        policy = breaker_policy(settings)
        pool = EnginePool(lambda: CircuitBreaker(policy), settings.request_stats_window)
    metrics = RouterMetrics(pool, settings.request_stats_window)
    client = build_client(settings)
    auth = ApiKeyCheck(_keys_from_env(settings.api_key_env), engine_api_key(settings))
    kv = build_kv(settings, client, metrics, pool, follow=follower is None)
    if follower is not None and kv is not None:
        follower.kv_index, follower.kv_stats = kv.index, kv.stats
    logic = aggregated_profile(settings, kv.index if kv else None)
    target = export_target(settings.otlp_traces_endpoint, os.environ)
    return AppState(
        settings=settings,
        pool=pool,
        metrics=metrics,
        client=client,
        discovery=discovery or build_discovery(settings),
        scraper=build_scraper(settings, pool, metrics),
        auth=auth,
        admin_auth=ApiKeyCheck(_keys_from_env(settings.admin_api_key_env, "--admin-api-key-env")),
        aggregated=AggregatedProxy(
            pool,
            logic,
            client,
            metrics,
            kv=kv.prompt if kv and logic.uses(KvPrefix) else None,
            non_stream_timeout=settings.non_stream_timeout,
            exclusive_prefill=prefill_is_exclusive(settings),
        ),
        scrape=follower is None,
        kv=kv,
        tracing=build_tracing(target) if target is not None else None,
    )


def _forget_when_idle(state: AppState, engine: EngineState) -> None:
    """Drop a departed engine's labelled series once its last request ended (ending one would
    create them again), unless an engine of the same name joined meanwhile."""
    name = engine.endpoint.display_name
    if any(o.endpoint.display_name == name for o in state.pool.all()):
        return
    if engine.in_flight > 0:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing can still be in flight on it
            state.metrics.forget_engine(name)
            return
        loop.call_later(_FORGET_RETRY_S, _forget_when_idle, state, engine)
        return
    state.metrics.forget_engine(name)


def on_endpoints(state: AppState) -> object:
    def apply(endpoints: tuple[Endpoint, ...]) -> None:
        added, removed = state.pool.update(endpoints)
        for s in added:
            log.info(
                "engine added: %s model=%s role=%s",
                s.endpoint.display_name,
                s.endpoint.model,
                s.endpoint.role.value,
            )
        for s in removed:
            log.info("engine removed: %s", s.endpoint.display_name)
            _forget_when_idle(state, s)
        if added:
            state.scraper.poke()
        if state.kv is not None and state.kv.subscriber is not None:
            state.kv.subscriber.update(endpoints)

    return apply
