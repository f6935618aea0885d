"""PodEndpointSet: re-lists and watch events, change detection and logging (no sockets)."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest
from pdrouter.discovery.pod_set import PodEndpointSet

from tests.router.discovery.fake_kube_api import load_events, load_json


def listed() -> list[dict[str, Any]]:
    return list(load_json("list-1.json")["items"])


def names(pods: PodEndpointSet) -> list[str]:
    return [e.name for e in pods.endpoints()]


def watch_1() -> list[tuple[str, dict[str, Any]]]:
    events = [json.loads(line) for line in load_events("watch-1.jsonl")]
    return [(e["type"], e["object"]) for e in events if e["type"] != "BOOKMARK"]


def test_relist_reports_change_only_when_ready_set_differs() -> None:
    pods = PodEndpointSet(8000)
    assert pods.replace_all(listed()) is True
    assert len(pods.endpoints()) == 2
    assert pods.replace_all(listed()) is False  # same cluster state: nothing to report


def test_endpoints_are_sorted_by_model_then_url() -> None:
    pods = PodEndpointSet(8000)
    items = listed()
    pods.replace_all(reversed(items))
    urls = [e.url for e in pods.endpoints()]
    assert urls == sorted(urls)


def test_watch_events_change_the_set_and_noops_do_not() -> None:
    pods = PodEndpointSet(8000)
    pods.replace_all(listed())
    changes = [(kind, pods.apply_event(kind, obj)) for kind, obj in watch_1()]
    assert changes == [
        ("ADDED", True),
        ("MODIFIED", False),  # the starting pod is still not ready
        ("MODIFIED", True),  # the prefill pod turned not ready
        ("DELETED", True),
    ]
    assert names(pods) == ["pdstack-tiny-both-5c7d9e1f23-h3j6w"]


def test_delete_of_unknown_pod_is_a_noop() -> None:
    pods = PodEndpointSet(8000)
    pods.replace_all(listed())
    ghost = copy.deepcopy(listed()[0])
    ghost["metadata"]["uid"] = "not-known"
    assert pods.apply_event("DELETED", ghost) is False
    assert len(pods.endpoints()) == 2


def test_relist_replaces_everything_missing_pods_vanish() -> None:
    pods = PodEndpointSet(8000)
    pods.replace_all(listed())
    assert pods.replace_all([]) is True
    assert pods.endpoints() == ()


def test_modified_endpoint_fields_are_reported() -> None:
    pods = PodEndpointSet(8000)
    items = listed()
    pods.replace_all(items)
    moved = copy.deepcopy(items[0])
    moved["status"]["podIP"] = "10.244.9.9"
    assert pods.apply_event("MODIFIED", moved) is True
    assert any(e.url == "http://10.244.9.9:8000" for e in pods.endpoints())


def test_config_warning_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pdrouter.discovery.pod_set")
    items = listed()
    items[0]["metadata"]["labels"]["pdstack.io/role"] = "prefiller"
    pods = PodEndpointSet(8000)
    pods.replace_all(items)
    pods.replace_all(items)  # periodic re-list of the same state
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "prefiller" in warnings[0].getMessage()
    assert len(pods.endpoints()) == 1


def test_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pdrouter.discovery.pod_set")
    pods = PodEndpointSet(8000)
    pods.replace_all(listed())
    for kind, obj in watch_1():
        pods.apply_event(kind, obj)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "pdstack-tiny-prefill-6d8f7b9c54-q7x2k added: http://10.244.1.17:8000" in text
    assert "pdstack-tiny-decode-7f9b6c8d45-z9r5t not routable: phase Pending" in text
    assert "pdstack-tiny-prefill-6d8f7b9c54-q7x2k no longer routable: not ready" in text
    assert "pdstack-tiny-decode-7f9b6c8d45-m4n8p removed" in text
