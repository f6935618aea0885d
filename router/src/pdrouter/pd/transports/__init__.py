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

        listener = KvReadyListener(settings.pd_proxy_host, settings.pd_proxy_port)
        return LmcacheTransport(listener, settings.pd_kv_wait_timeout)
    if settings.kv_transport is TransportName.FIXED:
        from pdrouter.pd.transports.fixed import FixedPeerTransport

        return FixedPeerTransport()
    from pdrouter.pd.transports.nixl import NixlTransport

    return NixlTransport(settings.pd_override_remote_host)


__all__ = ["build_transport"]
