"""The fake engine speaks vLLM's OpenAI API: checked with the official openai client."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from tests.doubles.engine_proc import FakeEngine


def client(engine: FakeEngine) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine.url + "/v1", api_key="k", max_retries=0, timeout=10)


def test_completion_non_stream_shape(engine: FakeEngine) -> None:
    r = client(engine).completions.create(model="tiny", prompt="Hello there, world", max_tokens=5)
    assert r.id.startswith("cmpl-")
    assert r.object == "text_completion" and r.model == "tiny" and r.created > 0
    assert r.choices[0].finish_reason == "length"
    assert len(r.choices[0].text.split()) == 5
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (4, 5, 9)
    assert r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 0


def test_completion_stream_with_usage_and_done(engine: FakeEngine) -> None:
    stream = client(engine).completions.create(
        model="tiny",
        prompt="Hello there, world",
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) == 4
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    plain = client(engine).completions.create(
        model="tiny", prompt="Hello there, world", max_tokens=4
    )
    assert "".join(texts) == plain.choices[0].text  # deterministic output
    raw = httpx.post(
        engine.url + "/v1/completions",
        json={"model": "tiny", "prompt": "x", "max_tokens": 2, "stream": True},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n")


def test_chat_stream_starts_with_role_delta(engine: FakeEngine) -> None:
    msgs = [{"role": "user", "content": "Tell me a story"}]
    chunks = list(
        client(engine).chat.completions.create(
            model="tiny",
            messages=msgs,
            max_tokens=3,
            stream=True,  # type: ignore[arg-type]
        )
    )
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    full = client(engine).chat.completions.create(model="tiny", messages=msgs, max_tokens=3)  # type: ignore[arg-type]
    assert full.object == "chat.completion"
    assert full.choices[0].message.role == "assistant"
    assert full.choices[0].message.content == content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_same_prompt_same_output_across_engines(engine: FakeEngine, fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    other = fake_engine_factory(models=["tiny"], engine_id="other")
    a = client(engine).completions.create(model="tiny", prompt="one two three", max_tokens=8)
    b = client(other).completions.create(model="tiny", prompt="one two three", max_tokens=8)
    c = client(other).completions.create(model="tiny", prompt="one two four", max_tokens=8)
    assert a.choices[0].text == b.choices[0].text != c.choices[0].text


def test_max_tokens_default_cap_and_eos(engine: FakeEngine) -> None:
    c = client(engine)
    assert c.completions.create(model="tiny", prompt="x").usage.completion_tokens == 16  # type: ignore[union-attr]
    engine.admin_config(output_tokens=3, eos_after=2)
    r = c.completions.create(model="tiny", prompt="x", max_tokens=10)
    assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (2, "stop")  # type: ignore[union-attr]
    r = c.completions.create(
        model="tiny", prompt="x", max_tokens=10, extra_body={"ignore_eos": True}
    )
    assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (10, "length")  # type: ignore[union-attr]
    r = c.completions.create(model="tiny", prompt="x", extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 3  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "nope", "prompt": "x"}, 404),
        ({"prompt": "x"}, 404),
        ({"model": "tiny", "prompt": "x", "max_tokens": 0}, 400),
        ({"model": "tiny", "prompt": "x", "max_tokens": "9"}, 400),
        ({"model": "tiny", "prompt": "x", "stream_options": {"include_usage": True}}, 400),
        ({"model": "tiny", "prompt": "x", "max_tokens": 2, "min_tokens": 3}, 400),
        ({"model": "tiny", "prompt": "x", "max_tokens": 600}, 400),
        ({"model": "tiny"}, 400),
    ],
)
def test_validation_like_vllm(engine: FakeEngine, body: dict, status: int) -> None:  # type: ignore[type-arg]
    r = httpx.post(engine.url + "/v1/completions", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == status and err["message"] and err["type"]


def test_openai_client_sees_404_for_unknown_model(engine: FakeEngine) -> None:
    with pytest.raises(openai.NotFoundError):
        client(engine).completions.create(model="missing", prompt="x")


def test_models_health_tokenize(engine: FakeEngine) -> None:
    assert [m.id for m in client(engine).models.list()] == ["tiny", "other"]
    assert httpx.get(engine.url + "/health").status_code == 200
    t = httpx.post(engine.url + "/tokenize", json={"prompt": "a b, c"}).json()
    assert t["count"] == 4 and len(t["tokens"]) == 4 and t["max_model_len"] == 512
    msgs = [{"role": "user", "content": "hi"}]
    chat = httpx.post(engine.url + "/tokenize", json={"messages": msgs}).json()
    r = client(engine).chat.completions.create(model="tiny", messages=msgs, max_tokens=1)  # type: ignore[arg-type]
    assert chat["count"] == r.usage.prompt_tokens  # type: ignore[union-attr]


def test_token_id_prompt_matches_text_prompt(engine: FakeEngine) -> None:
    ids = httpx.post(engine.url + "/tokenize", json={"prompt": "the quick fox"}).json()["tokens"]
    a = client(engine).completions.create(model="tiny", prompt=ids, max_tokens=6)
    b = client(engine).completions.create(model="tiny", prompt="the quick fox", max_tokens=6)
    assert a.choices[0].text == b.choices[0].text


def _metric(engine: FakeEngine, name: str) -> float:
    for line in engine.metrics_text().splitlines():
        if line.startswith(name + "{"):
            assert 'engine="0"' in line
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def test_metrics_current_names_and_prefix_cache(engine: FakeEngine) -> None:
    prompt = " ".join(f"w{i}" for i in range(40))  # 40 tokens: two full 16-token blocks
    for _ in range(2):
        client(engine).completions.create(model="tiny", prompt=prompt, max_tokens=2)
    assert _metric(engine, "vllm:prefix_cache_queries_total") == 80
    assert _metric(engine, "vllm:prefix_cache_hits_total") == 32
    assert _metric(engine, "vllm:prompt_tokens_total") == 80
    assert _metric(engine, "vllm:generation_tokens_total") == 4
    assert _metric(engine, "vllm:num_requests_running") == 0
    assert _metric(engine, "vllm:kv_cache_usage_perc") == 0
    assert _metric(engine, "vllm:external_prefix_cache_hits_total") == 0
    third = client(engine).completions.create(model="tiny", prompt=prompt, max_tokens=2)
    assert third.usage.prompt_tokens_details.cached_tokens == 32  # type: ignore[union-attr]
    engine.admin_config(metrics_override={"vllm:num_requests_waiting": 7})
    assert _metric(engine, "vllm:num_requests_waiting") == 7


def test_legacy_metric_names(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    eng = fake_engine_factory(legacy_metrics=True)
    text = eng.metrics_text()
    assert "vllm:gpu_cache_usage_perc{" in text
    assert "vllm:gpu_prefix_cache_hits_total{" in text
    assert "vllm:kv_cache_usage_perc" not in text


def test_running_and_waiting_follow_max_num_seqs(engine: FakeEngine) -> None:
    engine.admin_config(max_num_seqs=1, ttft_ms=1500)
    with httpx.Client(timeout=10) as http:
        body = {"model": "tiny", "prompt": "x", "max_tokens": 1}
        threads = [
            threading.Thread(
                target=http.post, args=(engine.url + "/v1/completions",), kwargs={"json": body}
            )
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while _metric(engine, "vllm:num_requests_waiting") < 2:
            assert time.monotonic() < deadline
        assert _metric(engine, "vllm:num_requests_running") == 1
        engine.admin_config(ttft_ms=0, max_num_seqs=8)
        for t in threads:
            t.join()
    assert engine.stats()["by_status"]["200"] == 3


def test_admin_config_and_stats_record_forwarded_requests(engine: FakeEngine) -> None:
    cfg = engine.admin_config(ttft_ms=5, models="tiny,extra")
    assert cfg["ttft_ms"] == 5 and cfg["models"] == ["tiny", "extra"]
    httpx.post(
        engine.url + "/v1/completions",
        json={"model": "extra", "prompt": "x", "max_tokens": 1},
        headers={"X-Request-Id": "rid-1", "Authorization": "Bearer secret"},
    )
    s = engine.stats()
    assert s["by_path"]["/v1/completions"] == 1 and s["by_kind"]["plain"] == 1
    last = s["recent"][-1]
    assert last["headers"]["x-request-id"] == "rid-1"
    assert last["headers"]["authorization"] == "Bearer secret"
    assert last["body"]["model"] == "extra"
    bad = httpx.post(engine.url + "/admin/config", json={"no_such_knob": 1})
    assert bad.status_code == 400 and "no_such_knob" in bad.text
    assert engine.reset()["models"] == ["tiny", "other"]
    assert engine.stats()["by_path"] == {}


def test_request_id_header_becomes_response_id(engine: FakeEngine) -> None:
    r = httpx.post(
        engine.url + "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
        headers={"X-Request-Id": "abc123"},
    )
    assert r.json()["id"] == "chatcmpl-abc123"
    assert r.headers["x-request-id"] == "abc123"
