"""Schemathesis against the router's own OpenAPI schema (GET /openapi.json, which documents the
two raw-ASGI generation routes too): schema-valid and schema-violating requests for every
operation, a bounded number each. No answer may be a 5xx, and a request the router rejected
itself never reaches an engine.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.fuzz.conftest import FuzzTarget
from tests.fuzz.counts import CaseCounts
from tests.fuzz.test_router_fuzz import ROUTER_JUDGED

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 40
# The forwarded routes (/tokenize, /v1/embeddings, ...) share one code path and the router
# judges only their `model`: fewer cases each keep the suite's time in check.
EXAMPLES_PER_FORWARDED_ROUTE = 8
GENERATION_PATHS = ("/v1/completions", "/v1/chat/completions")


def _schema(target: FuzzTarget) -> Any:
    status, raw = target.router.get("/openapi.json")
    assert status == 200
    return schemathesis.openapi.from_dict(orjson.loads(raw))


def _tame(case: Any) -> Any:
    """Schema-valid generation bodies name the served model and ask for few tokens, so most
    reach the engines instead of stopping at model_not_found."""
    body = getattr(case, "body", None)
    if case.method == "POST" and isinstance(body, dict):
        body["model"] = "tiny"
        body["max_tokens"] = min(int(body.get("max_tokens") or 4), 8)
        body.pop("max_completion_tokens", None)
    return case


def _fuzz_operation(target: FuzzTarget, counts: CaseCounts, op: Any, mode: GenerationMode) -> None:
    strategy = op.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE:
        strategy = strategy.map(_tame)
    is_generation = op.method.upper() == "POST"

    @settings(
        max_examples=EXAMPLES_PER_OPERATION
        if op.method.upper() != "POST" or op.path in GENERATION_PATHS
        else EXAMPLES_PER_FORWARDED_ROUTE,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        before = target.forwarded() if is_generation else 0
        resp = case.call(base_url=target.router.url, timeout=15)
        assert resp.status_code < 500, f"{case.method} {case.path}: {resp.text[:300]}"
        code = ""
        if resp.status_code >= 400 and "json" in str(resp.headers.get("content-type", "")):
            err = resp.json().get("error", {})
            code = str(err.get("code", "")) if isinstance(err, dict) else ""
        if is_generation and code in ROUTER_JUDGED:
            assert target.forwarded() == before, f"forwarded after {code}"
        counts.add(f"schemathesis_{mode.value}", f"{resp.status_code} {code}".strip())

    try:
        run()
    except Unsatisfiable:
        # Negative mode on an operation without parameters or body: nothing can be violated.
        assert mode is GenerationMode.NEGATIVE and not is_generation


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_openapi_operations(
    target: FuzzTarget, case_counts: CaseCounts, mode: GenerationMode
) -> None:
    schema = _schema(target)
    operations = [r.ok() for r in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions"}
    for op in operations:
        _fuzz_operation(target, case_counts, op, mode)
