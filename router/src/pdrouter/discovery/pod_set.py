"""The set of engine pods one discovery has seen, and the ready endpoints they yield.

Pure state with no I/O: a full re-list replaces it, watch events patch it, and each call says
whether the ready endpoint set changed so the listener hears only real changes. Log lines are
written only when a pod's state changes, so a periodic re-list of an unchanged cluster is quiet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pdrouter.discovery.endpoint import Endpoint
from pdrouter.discovery.pod_parsing import PodMapping, map_pod

logger = logging.getLogger(__name__)

WatchEventType = str  # "ADDED" | "MODIFIED" | "DELETED" (BOOKMARK never reaches here)


class PodEndpointSet:
    """Pods by UID and the sorted tuple of endpoints of the ready ones."""

    def __init__(self, default_port: int) -> None:
        self._default_port = default_port
        self._pods: dict[str, PodMapping] = {}
        self._endpoints: tuple[Endpoint, ...] = ()

    def endpoints(self) -> tuple[Endpoint, ...]:
        """Ready endpoints in a stable order (model, URL, id)."""
        return self._endpoints

    def replace_all(self, pods: Iterable[Mapping[str, Any]]) -> bool:
        """Make the set exactly the listed pods; True when the ready endpoints changed."""
        fresh: dict[str, PodMapping] = {}
        for pod in pods:
            mapping = map_pod(pod, self._default_port)
            fresh[_key(mapping)] = mapping
            self._log_transition(self._pods.get(_key(mapping)), mapping)
        for key, old in self._pods.items():
            if key not in fresh:
                self._log_removed(old)
        self._pods = fresh
        return self._refresh()

    def apply_event(self, event_type: WatchEventType, pod: Mapping[str, Any]) -> bool:
        """Apply one watch event; True when the ready endpoints changed."""
        mapping = map_pod(pod, self._default_port)
        key = _key(mapping)
        old = self._pods.get(key)
        if event_type == "DELETED":
            if old is not None:
                self._log_removed(old)
                del self._pods[key]
        else:
            self._log_transition(old, mapping)
            self._pods[key] = mapping
        return self._refresh()

    def _refresh(self) -> bool:
        ready = (m.endpoint for m in self._pods.values() if m.endpoint is not None)
        new = tuple(sorted(ready, key=lambda e: (e.model, e.url, e.id)))
        changed = new != self._endpoints
        self._endpoints = new
        return changed

    @staticmethod
    def _log_transition(old: PodMapping | None, new: PodMapping) -> None:
        if old is None or old.warnings != new.warnings:
            for warning in new.warnings:
                logger.warning("k8s discovery: pod %s: %s", new.name, warning)
        if new.endpoint is not None:
            if old is None or old.endpoint != new.endpoint:
                ep = new.endpoint
                verb = "added" if old is None or old.endpoint is None else "updated"
                logger.info(
                    "k8s discovery: pod %s %s: %s model=%s role=%s",
                    new.name,
                    verb,
                    ep.url,
                    ep.model,
                    ep.role.value,
                )
        elif old is None or old.skip_reason != new.skip_reason:
            was_routable = old is not None and old.endpoint is not None
            logger.info(
                "k8s discovery: pod %s %s: %s",
                new.name,
                "no longer routable" if was_routable else "not routable",
                new.skip_reason,
            )

    @staticmethod
    def _log_removed(old: PodMapping) -> None:
        level = logging.INFO if old.endpoint is not None else logging.DEBUG
        logger.log(level, "k8s discovery: pod %s removed", old.name)


def _key(mapping: PodMapping) -> str:
    # UID is the identity across a pod's life; a pod name is reused by StatefulSets.
    return mapping.uid or mapping.name
