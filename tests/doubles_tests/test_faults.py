"""Every fault mode of the fake engine, per request (X-Fault) and from the live config."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.doubles.engine_proc import FakeEngine

BODY = {"model": "tiny", "prompt": "hello world", "max_tokens": 4}
STREAM = {**BODY, "stream": True}


def post(engine: FakeEngine, body: dict, fault: str | None = None, timeout: float = 5):  # type: ignore[no-untyped-def,type-arg]
    headers = {"X-Fault": fault} if fault else {}
    return httpx.post(engine.url + "/v1/completions", json=body, headers=headers, timeout=timeout)


def stream_lines(engine: FakeEngine, fault: str, timeout: float = 5) -> list[str]:
    lines: list[str] = []
    with httpx.stream(
        "POST",
        engine.url + "/v1/completions",
        json=STREAM,
        headers={"X-Fault": fault},
        timeout=timeout,
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line:
                lines.append(line)
    return lines


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_http_error_status_and_vllm_error_body(engine: FakeEngine, status: int) -> None:
    r = post(engine, BODY, f"http_error;status={status}")
    assert r.status_code == status
    assert r.json()["error"]["code"] == status


def test_x_return_error_header_like_llm_d_sim(engine: FakeEngine) -> None:
    r = httpx.post(engine.url + "/v1/completions", json=BODY, headers={"X-Return-Error": "429"})
    assert r.status_code == 429


def test_config_fault_with_count_then_clears(engine: FakeEngine) -> None:
    engine.set_faults(http_error={"status": 503, "count": 2})
    assert [post(engine, BODY).status_code for _ in range(3)] == [503, 503, 200]
    assert engine.admin_config()["faults"] == {}


def test_fault_kind_targets_one_pd_leg(engine: FakeEngine) -> None:
    assert post(engine, BODY, "http_error;status=503;kind=prefill").status_code == 200
    prefill = {**BODY, "kv_transfer_params": {"do_remote_decode": True}}
    assert post(engine, prefill, "http_error;status=503;kind=prefill").status_code == 503


def test_refuse_drops_connection_without_answer(engine: FakeEngine) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        post(engine, BODY, "refuse")
    assert post(engine, BODY).status_code == 200  # the engine itself is fine


def test_hang_never_answers_and_counts_cancellation(engine: FakeEngine) -> None:
    with pytest.raises(httpx.ReadTimeout):
        post(engine, BODY, "hang", timeout=0.5)
    deadline = time.monotonic() + 5
    while engine.stats()["cancelled"] < 1:  # the client gave up: the handler is cancelled
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_hang_before_first_byte_sends_headers_only(engine: FakeEngine) -> None:
    with httpx.stream(
        "POST",
        engine.url + "/v1/completions",
        json=STREAM,
        headers={"X-Fault": "hang_before_first_byte"},
        timeout=httpx.Timeout(5, read=0.5),
    ) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            next(r.iter_bytes())


def test_die_mid_stream_after_n_chunks(engine: FakeEngine) -> None:
    got: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST",
            engine.url + "/v1/completions",
            json=STREAM,
            headers={"X-Fault": "die_mid_stream;after_chunks=2"},
            timeout=5,
        ) as r,
    ):
        for line in r.iter_lines():
            if line:
                got.append(line)
    assert len(got) == 2 and all(x.startswith("data: {") for x in got)


def test_stall_mid_stream(engine: FakeEngine) -> None:
    got: list[str] = []
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream(
            "POST",
            engine.url + "/v1/completions",
            json=STREAM,
            headers={"X-Fault": "stall_mid_stream;after_chunks=1"},
            timeout=httpx.Timeout(5, read=0.5),
        ) as r,
    ):
        for line in r.iter_lines():
            if line:
                got.append(line)
    assert len(got) == 1


def test_truncated_stream_ends_without_done(engine: FakeEngine) -> None:
    lines = stream_lines(engine, "truncated_stream")
    assert len(lines) == 4 and "data: [DONE]" not in lines
    assert len(stream_lines(engine, "truncated_stream;after_chunks=1")) == 1


def test_invalid_json(engine: FakeEngine) -> None:
    r = post(engine, BODY, "invalid_json")
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    lines = stream_lines(engine, "invalid_json")
    assert lines[-1] == "data: [DONE]" and lines[0].startswith("data: {")


def test_slow_adds_delay(engine: FakeEngine) -> None:
    with pytest.raises(httpx.ReadTimeout):
        post(engine, BODY, "slow;delay_ms=2000", timeout=0.3)
    assert post(engine, BODY, "slow;delay_ms=50").status_code == 200


def test_probe_faults(engine: FakeEngine) -> None:
    engine.set_faults(health_fail={}, metrics_error={})
    assert httpx.get(engine.url + "/health").status_code == 503
    assert httpx.get(engine.url + "/metrics").status_code == 500
    assert post(engine, BODY).status_code == 200  # inference still works
    engine.set_faults(metrics_hang={})
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(engine.url + "/metrics", timeout=0.3)
    assert httpx.get(engine.url + "/health").status_code == 200
    engine.set_faults()
    assert httpx.get(engine.url + "/metrics").status_code == 200


def test_bad_fault_header_and_config_are_rejected(engine: FakeEngine) -> None:
    assert post(engine, BODY, "explode").status_code == 400
    bad = httpx.post(engine.url + "/admin/config", json={"faults": {"explode": {}}})
    assert bad.status_code == 400


def test_fault_from_cli_flag(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    eng = fake_engine_factory(faults={"http_error": {"status": 429, "count": 1}})
    assert [post(eng, BODY).status_code for _ in range(2)] == [429, 200]


def test_kill_and_restart_on_same_port(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    eng = fake_engine_factory()
    port = eng.port
    eng.kill()
    with pytest.raises(httpx.ConnectError):
        post(eng, BODY)
    eng.restart()
    assert eng.port == port and post(eng, BODY).status_code == 200


def test_start_many_engines_in_parallel(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    engines = fake_engine_factory.many(3, ttft_ms=1)
    assert len({e.port for e in engines}) == 3
    assert all(post(e, BODY).status_code == 200 for e in engines)


def test_client_disconnect_mid_stream_cancels_the_request(engine: FakeEngine) -> None:
    engine.admin_config(itl_ms=50)
    with httpx.stream(
        "POST", engine.url + "/v1/completions", json={**STREAM, "max_tokens": 20}
    ) as r:
        next(r.iter_lines())  # read one chunk, then hang up
    deadline = time.monotonic() + 5
    while engine.stats()["cancelled"] < 1:  # what a router's abort propagation looks like
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert engine.stats()["running"] == 0
