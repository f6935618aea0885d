"""What the router knows about one engine, independent of how it was discovered."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Role(enum.StrEnum):
    """The part an engine plays in prefill/decode disaggregation."""

    PREFILL = "prefill"
    DECODE = "decode"
    BOTH = "both"

    @property
    def can_prefill(self) -> bool:
        return self is not Role.DECODE

    @property
    def can_decode(self) -> bool:
        return self is not Role.PREFILL

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls(value.strip().lower())
        except ValueError:
            names = ", ".join(r.value for r in cls)
            raise ValueError(f"unknown engine role {value!r} (expected one of: {names})") from None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One engine: a base URL serving one model in one role.

    `id` is stable for the engine's lifetime (pod UID, or the URL for static engines).
    `lmcache_init_ports` / `lmcache_alloc_ports` are the decoder's LMCache PD receiver ports,
    one per TP rank, when the engine publishes them. `kv_events_port` /
    `kv_events_replay_port` are its KV-cache event publisher and replay sockets.
    """

    id: str
    url: str
    model: str
    role: Role = Role.BOTH
    name: str = ""
    lmcache_init_ports: tuple[int, ...] = ()
    lmcache_alloc_ports: tuple[int, ...] = ()
    labels: tuple[tuple[str, str], ...] = field(default=())
    kv_events_port: int | None = None
    kv_events_replay_port: int | None = None

    @property
    def host(self) -> str:
        rest = self.url.split("://", 1)[-1]
        hostport = rest.split("/", 1)[0]
        if hostport.startswith("["):
            return hostport[1 : hostport.index("]")]
        return hostport.rsplit(":", 1)[0]

    @property
    def display_name(self) -> str:
        return self.name or self.url
