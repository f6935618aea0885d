"""KV-transfer strategies, one module each, chosen by --kv-transport."""

from __future__ import annotations

from pdrouter.config import KvTransport as TransportName
from pdrouter.config import RouterSettings
from pdrouter.pd.transports.base import KvTransport
from pdrouter.proxy.client import EngineClient


def build_transport(settings: RouterSettings, client: EngineClient) -> KvTransport:
    if settings.kv_transport is TransportName.LMCACHE:
        from pdrouter.pd.transports.lmcache import LmcacheTransport
        from pdrouter.pd.transports.lmcache_notify import KvReadyListener

        listener = KvReadyListener(
            settings.pd_proxy_host, settings.pd_proxy_port, settings.pd_proxy_max_message_bytes
        )
        return LmcacheTransport(listener, settings.pd_kv_wait_timeout)
    if settings.kv_transport is TransportName.FIXED:
        from pdrouter.pd.transports.fixed import FixedPeerTransport

        return FixedPeerTransport()
    from pdrouter.pd.transports.nixl import NixlTransport

    return NixlTransport(settings.pd_override_remote_host)


def prefill_is_exclusive(settings: RouterSettings) -> bool:
    """Whether --kv-transport's prefill engines must only ever get its prefill leg (then no
    other path, aggregated serving included, may pick an engine of role prefill)."""
    if settings.kv_transport is TransportName.LMCACHE:
        from pdrouter.pd.transports.lmcache import LmcacheTransport

        return LmcacheTransport.exclusive_prefill
    return False


__all__ = ["build_transport", "prefill_is_exclusive"]
