"""Malformed requests against a running router: never a 5xx for a client mistake, never a
crash, and nothing the router judged invalid reaches an engine.

Each generated case is one HTTP request (body, content type, odd headers) to a real
disagg_prefill router over fake engines (test doubles).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FuzzTarget
from tests.fuzz.counts import CaseCounts
from tests.fuzz.strategies import raw_bodies

pytestmark = pytest.mark.slow

# Codes the router itself answers with before anything is sent to an engine.
ROUTER_JUDGED = {
    "invalid_json",
    "empty_body",
    "missing_model",
    "invalid_stream",
    "invalid_max_tokens",
    "invalid_max_completion_tokens",
    "invalid_stream_options",
    "invalid_kv_transfer_params",
    "invalid_messages",
    "invalid_prompt",
    "invalid_request",
    "invalid_model",
    "invalid_n",
    "invalid_min_tokens",
    "invalid_logprobs",
    "invalid_top_logprobs",
    "invalid_prompt_logprobs",
    "invalid_logprob_token_ids",
    "unsupported_media_type",
    "request_too_large",
    "model_not_found",
}
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/vnd.api+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
    ";;;",
]
# Printable ASCII without surrounding blanks: what an HTTP client can put in a header value.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).map(
    str.strip
)
# Request ids stay URL-safe: the fake engine puts them unquoted into its KV-pull URL, so '#'
# or '?' in one breaks the test double's NIXL emulation, not the router (see docs/reliability.md).
request_ids = st.text(
    st.characters(whitelist_categories=("Lu", "Ll", "Nd"), max_codepoint=0x7E)
    | st.sampled_from("-_."),
    min_size=1,
    max_size=128,
)
odd_headers = st.fixed_dictionaries(
    {},
    optional={
        "x-request-id": request_ids,
        "authorization": header_text,
        "x-user-id": header_text,
        "traceparent": header_text,
        "x-fault": header_text,
        "accept": header_text,
    },
)
EXAMPLES = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _send(target: FuzzTarget, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(timeout=15) as client:
        return client.post(target.router.url + path, content=body, headers=headers)


def _check(target: FuzzTarget, resp: httpx.Response, forwarded_before: int) -> str:
    assert resp.status_code < 500, resp.text[:300]
    assert target.router.proc is not None and target.router.proc.poll() is None, "router died"
    if resp.status_code < 400:
        return str(resp.status_code)
    code = ""
    if resp.headers.get("content-type", "").startswith("application/json"):
        err = orjson.loads(resp.content).get("error", {})
        code = str(err.get("code", "")) if isinstance(err, dict) else ""
    if code in ROUTER_JUDGED:
        assert target.forwarded() == forwarded_before, f"forwarded after {code}"
    return code or str(resp.status_code)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@EXAMPLES
@given(
    body=raw_bodies(),
    ctype=st.sampled_from(CONTENT_TYPES) | header_text,
    headers=odd_headers,
)
@example(body=b"{" * 70_000, ctype="application/json", headers={})  # over --max-body-bytes
@example(body=b"", ctype="application/json", headers={})
@example(body=b'{"model": "tiny", "prompt": "x", "max_tokens": 1e400}', ctype="", headers={})
@example(body=b'{"model": "tiny", "prompt": "\\ud800"}', ctype="application/json", headers={})
def test_malformed_requests(
    target: FuzzTarget,
    case_counts: CaseCounts,
    path: str,
    body: bytes,
    ctype: str,
    headers: dict[str, str],
) -> None:
    before = target.forwarded()
    resp = _send(target, path, body, {**headers, "content-type": ctype})
    case_counts.add("router_fuzz", _check(target, resp, before))


@EXAMPLES
@given(payload=st.dictionaries(st.text(max_size=12), st.integers() | st.text(), max_size=6))
def test_unknown_fields_alone_never_reach_an_engine(
    target: FuzzTarget, case_counts: CaseCounts, payload: dict[str, Any]
) -> None:
    """An object without the fields routing needs is rejected by the router itself."""
    payload.pop("model", None)
    before = target.forwarded()
    resp = _send(target, "/v1/completions", json.dumps(payload).encode(), {})
    assert resp.status_code == 400
    case_counts.add("router_unknown_fields", _check(target, resp, before))
