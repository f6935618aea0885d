"""The pod runner's translations from a pod spec to a process, without a cluster: what a kubelet
would resolve must resolve the same, and what a pod would not have must not work here either.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.podrunner import images
from tests.cluster.podrunner.mounts import MountTable
from tests.cluster.podrunner.podspec import (
    Lookups,
    UnsupportedSpec,
    container_env,
    expand,
    service_links,
)

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
    "spec": {"nodeName": "kwok-node-0"},
    "status": {"podIP": "127.101.0.7", "hostIP": "127.0.0.1"},
}
NO_OBJECTS = Lookups(config_map=lambda _ns, _n: None, secret=lambda _ns, _n: None)


def test_env_resolves_field_refs_and_earlier_variables_in_order() -> None:
    container = {
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "URL", "value": "http://$(POD_IP):8000/$(MISSING)/$$(POD_IP)"},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        ]
    }
    env = container_env(POD, container, NO_OBJECTS, {}, {})
    assert env == {
        "POD_IP": "127.101.0.7",
        "URL": "http://127.101.0.7:8000/$(MISSING)/$(POD_IP)",
        "APP": "x",
    }
    assert expand("--k8s-namespace=$(NS)", {"NS": "ns"}) == "--k8s-namespace=ns"


def test_a_missing_secret_fails_the_container_unless_optional() -> None:
    ref = {"secretKeyRef": {"name": "s", "key": "k"}}
    with pytest.raises(UnsupportedSpec, match="secretKeyRef s/k not found"):
        container_env(POD, {"env": [{"name": "T", "valueFrom": ref}]}, NO_OBJECTS, {}, {})
    optional = {"secretKeyRef": {"name": "s", "key": "k", "optional": True}}
    assert (
        container_env(POD, {"env": [{"name": "T", "valueFrom": optional}]}, NO_OBJECTS, {}, {})
        == {}
    )


def test_service_links_are_the_kubelets_names() -> None:
    svc = {
        "metadata": {"name": "vllm-router-service"},
        "spec": {
            "clusterIP": "127.96.0.9",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    }
    env = service_links([svc])
    assert env["VLLM_ROUTER_SERVICE_SERVICE_HOST"] == "127.96.0.9"
    assert env["VLLM_ROUTER_SERVICE_PORT"] == "tcp://127.96.0.9:80"
    assert env["VLLM_ROUTER_SERVICE_SERVICE_PORT_HTTP"] == "80"


def test_mounted_paths_are_rewritten_whole_and_only_under_a_mount(tmp_path: Path) -> None:
    table = MountTable()
    table.add("/etc/pdstack/lmcache", tmp_path / "cfg")
    table.add("/etc/pdstack/lmcache-template", tmp_path / "tpl")
    line = (
        "sed x /etc/pdstack/lmcache-template/a.yaml > /etc/pdstack/lmcache/a.yaml; "
        "cat /etc/pdstack/lmcachex"
    )
    assert table.rewrite(line) == (
        f"sed x {tmp_path}/tpl/a.yaml > {tmp_path}/cfg/a.yaml; cat /etc/pdstack/lmcachex"
    )
    assert table.host_path("/etc/pdstack/lmcache/a.yaml") == tmp_path / "cfg" / "a.yaml"
    assert table.host_path("/etc/other") is None


def test_images_provide_only_their_own_executables(tmp_path: Path) -> None:
    runtimes = images.ImageRuntimes(tmp_path)
    lmcache = runtimes.for_image("lmcache/vllm-openai:latest", "vllm")
    assert lmcache.resolve("/opt/venv/bin/vllm") == str(images.VLLM_VENV / "bin" / "vllm")
    assert lmcache.resolve("/opt/venv/bin/lmcache_server").startswith(str(tmp_path))
    vllm = runtimes.for_image("vllm/vllm-openai:v0.32.0", "vllm")
    assert vllm.resolve("vllm") == str(images.VLLM_VENV / "bin" / "vllm")
    for missing in ("/opt/venv/bin/vllm", "lmcache_server", "pdstack-router", "curl"):
        with pytest.raises(UnsupportedSpec, match="executable file not found"):
            vllm.resolve(missing)
    assert vllm.resolve("/bin/sh") == "/bin/sh"
    router = runtimes.for_image("localhost/pdstack-router:0.1.0", "vllm")
    assert Path(router.resolve("/opt/pdstack/bin/pdstack-router")).name == "pdstack-router"
    with pytest.raises(UnsupportedSpec, match="no local runtime"):
        runtimes.for_image("busybox:1.36", "vllm")


@pytest.mark.parametrize("engines", ["vllm", "double"])
def test_a_shell_in_the_container_finds_the_image_commands_on_its_path(
    tmp_path: Path, engines: str
) -> None:
    """What the chart's `sh -c` scripts call by name (vllm, python3 in the drain preStop)."""
    runtime = images.ImageRuntimes(tmp_path).for_image("vllm/vllm-openai:v0.32.0", engines)
    env = runtime.process_env({}, "127.101.0.7", tmp_path)
    script = "for c in vllm python3 lmcache_server; do command -v $c || echo no-$c; done"
    found = subprocess.run(
        [runtime.resolve("sh"), "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    double = str(tmp_path / "vllm-double-bin" / "vllm")
    assert found[0] == (double if engines == "double" else str(images.VLLM_VENV / "bin" / "vllm"))
    assert found[1] == str(images.VLLM_VENV / "bin" / "python3")
    assert found[2] == "no-lmcache_server"


def test_a_wildcard_bind_lands_on_the_pod_ip_and_loopback_stays_loopback() -> None:
    code = (
        "import socket\n"
        "a = socket.socket(); a.bind(('0.0.0.0', 0))\n"
        "b = socket.socket(); b.bind(('127.0.0.1', 0))\n"
        "import zmq\n"
        "z = zmq.Context().socket(zmq.PULL); z.bind('tcp://*:0')\n"
        "print(a.getsockname()[0], b.getsockname()[0], z.last_endpoint.decode())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(images.NETSHIM), "PDSTACK_POD_IP": "127.101.0.7"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    ip, loopback, zmq_endpoint = out.stdout.split()
    assert (ip, loopback) == ("127.101.0.7", "127.0.0.1")
    assert zmq_endpoint.startswith("tcp://127.101.0.7:")
