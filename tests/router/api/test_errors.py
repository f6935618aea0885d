"""Every client-visible error of the aggregated path, against real processes."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.slow
OK = {"model": "tiny", "prompt": "hello", "max_tokens": 3}


@pytest.fixture
def engine(fake_engine_factory):  # type: ignore[no-untyped-def]
    return fake_engine_factory(models=["tiny"], itl_ms=5)


@pytest.fixture
def r(engine):  # type: ignore[no-untyped-def]
    args = [
        *static_args([engine]),
        "--first-byte-timeout",
        "1.5",
        "--idle-timeout",
        "1",
        "--non-stream-timeout",
        "1.5",
        "--max-body-bytes",
        "4096",
        "--engine-scrape-interval",
        "60",
    ]
    with RouterProcess(args).start() as proc:
        yield proc


def _error(resp: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body["error"]) >= {"message", "type", "code"}
    assert body["error"]["code"] == code
    return body


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, "invalid_json"),
        (b"", {}, 400, "empty_body"),
        (b"[1, 2]", {}, 400, "invalid_json"),
        (b'{"prompt": "x"}', {}, 400, "missing_model"),
        (b'{"model": "tiny", "prompt": "x", "max_tokens": 0}', {}, 400, "invalid_max_tokens"),
        (b'{"model": "tiny", "prompt": "x", "max_tokens": "9"}', {}, 400, "invalid_max_tokens"),
        (b'{"model": "tiny", "prompt": "x", "stream": "yes"}', {}, 400, "invalid_stream"),
        (b'{"model": "tiny"}', {}, 400, "invalid_prompt"),
        (b'{"model": "nope", "prompt": "x"}', {}, 404, "model_not_found"),
        (
            b'{"model": "tiny", "prompt": "x"}',
            {"content-type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        (b'{"model": "tiny", "prompt": "' + b"x" * 5000 + b'"}', {}, 413, "request_too_large"),
    ],
)
def test_client_mistakes(r, engine, content, headers, status, code) -> None:  # type: ignore[no-untyped-def]
    hdrs = {"content-type": "application/json", **headers}
    _error(httpx.post(r.url + "/v1/completions", content=content, headers=hdrs), status, code)
    assert engine.stats()["by_path"] == {}  # nothing invalid was forwarded


def test_chat_needs_messages(r) -> None:  # type: ignore[no-untyped-def]
    resp = httpx.post(r.url + "/v1/chat/completions", json={"model": "tiny", "messages": []})
    _error(resp, 400, "invalid_messages")


def test_engine_4xx_is_passed_through_unchanged(r, engine) -> None:  # type: ignore[no-untyped-def]
    bad = {"model": "tiny", "prompt": "x", "max_tokens": 1_000_000}  # past the context length
    via = httpx.post(r.url + "/v1/completions", json=bad)
    direct = httpx.post(engine.url + "/v1/completions", json=bad)
    assert via.status_code == direct.status_code == 400
    assert via.content == direct.content


def test_engine_timeout_is_504(r, engine) -> None:  # type: ignore[no-untyped-def]
    engine.set_faults(hang={})
    started = time.monotonic()
    _error(httpx.post(r.url + "/v1/completions", json=OK, timeout=10), 504, "timeout")
    assert time.monotonic() - started < 5


def test_engine_unreachable_is_502_after_retry(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    a, b = fake_engine_factory(models=["tiny"]), fake_engine_factory(models=["tiny"])
    with RouterProcess([*static_args([a, b]), "--engine-scrape-interval", "60"]).start() as r:
        a.kill()
        b.kill()
        body = _error(httpx.post(r.url + "/v1/completions", json=OK), 502, "engine_unreachable")
        assert "could not be reached" in body["error"]["message"]
        assert r.metric("pdstack_router_retries_total", phase="aggregated") == 1
        assert r.metric("pdstack_router_errors_total", code="engine_unreachable") == 1


def test_engine_5xx_is_retried_on_another_engine(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    a, b = fake_engine_factory(models=["tiny"]), fake_engine_factory(models=["tiny"])
    a.set_faults(http_error={"status": 503})
    with RouterProcess([*static_args([a, b]), "--engine-scrape-interval", "60"]).start() as r:
        for _ in range(4):
            assert httpx.post(r.url + "/v1/completions", json=OK).status_code == 200
    a.set_faults(http_error={"status": 500})
    b.set_faults(http_error={"status": 500})
    with RouterProcess([*static_args([a, b]), "--engine-scrape-interval", "60"]).start() as r:
        _error(httpx.post(r.url + "/v1/completions", json=OK), 502, "engine_error")


def test_error_after_stream_started_is_a_final_sse_event(r, engine) -> None:  # type: ignore[no-untyped-def]
    engine.set_faults(die_mid_stream={"after_chunks": 2})
    resp = httpx.post(r.url + "/v1/completions", json={**OK, "max_tokens": 8, "stream": True})
    assert resp.status_code == 200
    events = [line for line in resp.text.split("\n\n") if line.strip()]
    assert events[-1] == "data: [DONE]"
    assert '"error"' in events[-2] and "engine_error" in events[-2]
    assert len([e for e in events if '"text"' in e]) == 2
    time.sleep(0.2)
    assert r.metric("pdstack_router_requests_total", outcome="error") == 1


def test_truncated_stream_is_reported_not_passed_as_success(r, engine) -> None:  # type: ignore[no-untyped-def]
    engine.set_faults(truncated_stream={})
    resp = httpx.post(r.url + "/v1/completions", json={**OK, "stream": True})
    events = [line for line in resp.text.split("\n\n") if line.strip()]
    assert "truncated_stream" in events[-2] and events[-1] == "data: [DONE]"


def test_idle_stream_times_out(r, engine) -> None:  # type: ignore[no-untyped-def]
    engine.set_faults(stall_mid_stream={"after_chunks": 1})
    started = time.monotonic()
    resp = httpx.post(r.url + "/v1/completions", json={**OK, "stream": True}, timeout=10)
    assert '"code":"timeout"' in resp.text and resp.text.endswith("data: [DONE]\n\n")
    assert time.monotonic() - started < 5


def test_client_disconnect_cancels_the_engine_request(r, engine) -> None:  # type: ignore[no-untyped-def]
    engine.admin_config(itl_ms=200)
    with httpx.stream(
        "POST", r.url + "/v1/completions", json={**OK, "max_tokens": 50, "stream": True}
    ) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                break
    deadline = time.monotonic() + 5
    while engine.stats()["cancelled"] < 1:
        assert time.monotonic() < deadline, engine.stats()
        time.sleep(0.05)
    while r.metric("pdstack_router_engine_in_flight") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert r.metric("pdstack_router_requests_total", outcome="cancelled") == 1


def test_api_keys(engine) -> None:  # type: ignore[no-untyped-def]
    env = {"ROUTER_KEYS": "k1,k2", "ENGINE_KEY": "engine-secret"}
    args = [
        *static_args([engine]),
        "--api-key-env",
        "ROUTER_KEYS",
        "--engine-api-key-env",
        "ENGINE_KEY",
    ]
    with RouterProcess(args, env).start() as r:
        _error(httpx.post(r.url + "/v1/completions", json=OK), 401, "invalid_api_key")
        _error(
            httpx.post(r.url + "/v1/completions", json=OK, headers={"authorization": "Bearer k3"}),
            401,
            "invalid_api_key",
        )
        ok = httpx.post(r.url + "/v1/completions", json=OK, headers={"authorization": "Bearer k2"})
        assert ok.status_code == 200
    sent = engine.stats()["recent"][-1]["headers"]
    assert sent.get("authorization") == "Bearer engine-secret"
    assert "k2" not in r.log_text() and "k1" not in r.log_text()


def test_client_authorization_is_forwarded_without_router_keys(r, engine) -> None:  # type: ignore[no-untyped-def]
    httpx.post(r.url + "/v1/completions", json=OK, headers={"authorization": "Bearer user-key"})
    assert engine.stats()["recent"][-1]["headers"].get("authorization") == "Bearer user-key"


def test_no_engine_ready_is_503_with_retry_after(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    e = fake_engine_factory(models=["tiny"])
    e.set_faults(health_fail={})
    args = [*static_args([e]), "--engine-scrape-interval", "0.2", "--health-failure-threshold", "1"]
    with RouterProcess(args).start(wait_ready=False) as r:
        deadline = time.monotonic() + 5
        while httpx.get(r.url + "/ready").status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        resp = httpx.post(r.url + "/v1/completions", json=OK)
        _error(resp, 503, "no_ready_engine")
        assert resp.headers["retry-after"] == "1"


def test_unknown_route_and_wrong_method_are_openai_errors(r) -> None:  # type: ignore[no-untyped-def]
    _error(httpx.get(r.url + "/v1/completions"), 405, "method_not_allowed")
    _error(httpx.post(r.url + "/v1/nothing-here", json={}), 404, "not_found")


def test_openapi_describes_the_generation_routes(r) -> None:  # type: ignore[no-untyped-def]
    paths = httpx.get(r.url + "/openapi.json").json()["paths"]
    body = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["model", "messages"]
    assert "/v1/completions" in paths and "/ready" in paths


def test_oversized_headers_are_refused(r, engine) -> None:  # type: ignore[no-untyped-def]
    resp = httpx.post(r.url + "/v1/completions", json=OK, headers={"x-big": "a" * 70_000})
    _error(resp, 431, "headers_too_large")
    assert engine.stats()["by_path"] == {}
