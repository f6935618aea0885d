"""Pod JSON -> Endpoint mapping (pure; no sockets)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pdrouter.discovery.endpoint import Role
from pdrouter.discovery.pod_parsing import endpoint_from_pod, map_pod

from tests.router.discovery.fake_kube_api import load_json

PORT = 8000


def recorded_pod(name_part: str) -> dict[str, Any]:
    """A pod from the recorded list (fixtures/list-1.json), deep-copied for editing."""
    items = load_json("list-1.json")["items"]
    return copy.deepcopy(next(p for p in items if name_part in p["metadata"]["name"]))


@pytest.fixture
def pod() -> dict[str, Any]:
    return recorded_pod("prefill")  # Running, Ready, role prefill, IPv4


def set_ready(pod: dict[str, Any], value: str) -> None:
    for condition in pod["status"]["conditions"]:
        if condition["type"] == "Ready":
            condition["status"] = value


def test_ready_pod_maps_to_endpoint(pod: dict[str, Any]) -> None:
    endpoint = endpoint_from_pod(pod, PORT)
    assert endpoint is not None
    assert endpoint.url == "http://10.244.1.17:8000"
    assert endpoint.model == "Qwen/Qwen3-0.6B"
    assert endpoint.role is Role.PREFILL
    assert endpoint.id == pod["metadata"]["uid"]
    assert endpoint.name == "pdstack-tiny-prefill-6d8f7b9c54-q7x2k"
    assert endpoint.host == "10.244.1.17"
    assert ("pdstack.io/role", "prefill") in endpoint.labels
    assert list(endpoint.labels) == sorted(endpoint.labels)
    assert endpoint.lmcache_init_ports == ()


def test_decode_pod_carries_lmcache_receiver_ports() -> None:
    endpoint = endpoint_from_pod(recorded_pod("m4n8p"), PORT)
    assert endpoint is not None
    assert endpoint.role is Role.DECODE
    assert endpoint.lmcache_init_ports == (7300,)
    assert endpoint.lmcache_alloc_ports == (7400,)


def test_multiple_lmcache_ports_one_per_tp_rank(pod: dict[str, Any]) -> None:
    pod["metadata"]["annotations"]["pdstack.io/lmcache-init-ports"] = "7300, 7301"
    pod["metadata"]["annotations"]["pdstack.io/lmcache-alloc-ports"] = "7400,7401"
    endpoint = endpoint_from_pod(pod, PORT)
    assert endpoint is not None
    assert (endpoint.lmcache_init_ports, endpoint.lmcache_alloc_ports) == (
        (7300, 7301),
        (7400, 7401),
    )


@pytest.mark.parametrize("bad", ["7300,x", "70000", "-1", ","])
def test_bad_lmcache_ports_warn_and_drop_only_that_field(pod: dict[str, Any], bad: str) -> None:
    pod["metadata"]["annotations"]["pdstack.io/lmcache-init-ports"] = bad
    pod["metadata"]["annotations"]["pdstack.io/lmcache-alloc-ports"] = "7400"
    mapping = map_pod(pod, PORT)
    assert mapping.endpoint is not None
    assert mapping.endpoint.lmcache_init_ports == ()
    assert mapping.endpoint.lmcache_alloc_ports == (7400,)
    assert len(mapping.warnings) == 1
    assert "pdstack.io/lmcache-init-ports" in mapping.warnings[0]


def test_kv_event_ports_come_from_annotations(pod: dict[str, Any]) -> None:
    assert endpoint_from_pod(pod, PORT).kv_events_port is None  # type: ignore[union-attr]
    pod["metadata"]["annotations"]["pdstack.io/kv-events-port"] = "5557"
    pod["metadata"]["annotations"]["pdstack.io/kv-events-replay-port"] = "5558"
    endpoint = endpoint_from_pod(pod, PORT)
    assert endpoint is not None
    assert (endpoint.kv_events_port, endpoint.kv_events_replay_port) == (5557, 5558)


def test_a_bad_kv_event_port_disables_only_the_events(pod: dict[str, Any]) -> None:
    pod["metadata"]["annotations"]["pdstack.io/kv-events-port"] = "zmq"
    mapping = map_pod(pod, PORT)
    assert mapping.endpoint is not None and mapping.endpoint.kv_events_port is None
    assert "pdstack.io/kv-events-port" in mapping.warnings[0]


def test_starting_pod_is_not_routed() -> None:
    mapping = map_pod(recorded_pod("z9r5t"), PORT)  # Pending, no IP yet
    assert mapping.endpoint is None
    assert mapping.skip_reason == "phase Pending"


def test_running_but_not_ready_is_not_routed(pod: dict[str, Any]) -> None:
    set_ready(pod, "False")
    assert map_pod(pod, PORT).skip_reason == "not ready"


def test_missing_ready_condition_is_not_ready(pod: dict[str, Any]) -> None:
    pod["status"]["conditions"] = [c for c in pod["status"]["conditions"] if c["type"] != "Ready"]
    assert map_pod(pod, PORT).skip_reason == "not ready"


def test_terminating_pod_is_not_routed_even_if_ready(pod: dict[str, Any]) -> None:
    pod["metadata"]["deletionTimestamp"] = "2026-11-22T21:53:10Z"
    assert map_pod(pod, PORT).skip_reason == "terminating"


def test_finished_pod_is_not_routed(pod: dict[str, Any]) -> None:
    pod["status"]["phase"] = "Succeeded"
    assert map_pod(pod, PORT).skip_reason == "phase Succeeded"


def test_ready_pod_without_ip_is_not_routed(pod: dict[str, Any]) -> None:
    del pod["status"]["podIP"]
    assert map_pod(pod, PORT).skip_reason == "no pod IP"


def test_model_falls_back_to_production_stack_model_label(pod: dict[str, Any]) -> None:
    del pod["metadata"]["annotations"]["pdstack.io/model"]
    pod["metadata"]["labels"]["model"] = "tiny"
    endpoint = endpoint_from_pod(pod, PORT)
    assert endpoint is not None and endpoint.model == "tiny"


def test_annotation_wins_over_model_label(pod: dict[str, Any]) -> None:
    pod["metadata"]["labels"]["model"] = "label-model"
    endpoint = endpoint_from_pod(pod, PORT)
    assert endpoint is not None and endpoint.model == "Qwen/Qwen3-0.6B"


def test_missing_model_skips_with_warning(pod: dict[str, Any]) -> None:
    del pod["metadata"]["annotations"]["pdstack.io/model"]
    mapping = map_pod(pod, PORT)
    assert mapping.endpoint is None
    assert mapping.skip_reason == "no model"
    assert "pdstack.io/model" in mapping.warnings[0]


def test_bad_role_skips_with_warning(pod: dict[str, Any]) -> None:
    pod["metadata"]["labels"]["pdstack.io/role"] = "prefiller"
    mapping = map_pod(pod, PORT)
    assert mapping.endpoint is None
    assert mapping.skip_reason == "invalid role"
    assert "prefiller" in mapping.warnings[0]


def test_role_defaults_to_both(pod: dict[str, Any]) -> None:
    del pod["metadata"]["labels"]["pdstack.io/role"]
    endpoint = endpoint_from_pod(pod, PORT)
    assert endpoint is not None and endpoint.role is Role.BOTH


def test_role_label_is_case_insensitive(pod: dict[str, Any]) -> None:
    pod["metadata"]["labels"]["pdstack.io/role"] = "Decode"
    endpoint = endpoint_from_pod(pod, PORT)
    assert endpoint is not None and endpoint.role is Role.DECODE


def test_port_defaults_when_annotation_absent(pod: dict[str, Any]) -> None:
    del pod["metadata"]["annotations"]["pdstack.io/port"]
    endpoint = endpoint_from_pod(pod, 9000)
    assert endpoint is not None and endpoint.url == "http://10.244.1.17:9000"


def test_port_annotation_overrides_default(pod: dict[str, Any]) -> None:
    pod["metadata"]["annotations"]["pdstack.io/port"] = "8100"
    endpoint = endpoint_from_pod(pod, 9000)
    assert endpoint is not None and endpoint.url == "http://10.244.1.17:8100"


@pytest.mark.parametrize("bad", ["http", "0", "65536", ""])
def test_bad_port_annotation_skips_with_warning(pod: dict[str, Any], bad: str) -> None:
    pod["metadata"]["annotations"]["pdstack.io/port"] = bad
    mapping = map_pod(pod, PORT)
    assert mapping.endpoint is None
    assert mapping.skip_reason == "invalid port"
    assert mapping.warnings


def test_ipv6_pod_ip_is_bracketed(pod: dict[str, Any]) -> None:
    pod["status"]["podIP"] = "fd00:10:244:3::1c"
    endpoint = endpoint_from_pod(pod, PORT)
    assert endpoint is not None
    assert endpoint.url == "http://[fd00:10:244:3::1c]:8000"
    assert endpoint.host == "fd00:10:244:3::1c"


def test_pod_without_labels_or_annotations_is_skipped_not_crashed() -> None:
    minimal = {
        "metadata": {"name": "bare", "uid": "u1"},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    mapping = map_pod(minimal, PORT)
    assert mapping.endpoint is None and mapping.skip_reason == "no model"
    assert map_pod({}, PORT).skip_reason == "phase unknown"
