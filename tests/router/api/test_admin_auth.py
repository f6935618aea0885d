"""Optional auth for /engines and /metrics, separate from the client API keys."""

from __future__ import annotations

import httpx
import pytest

from tests.harness.router_proc import RouterProcess, static_args

pytestmark = pytest.mark.slow


def test_admin_routes_need_the_admin_key_and_probes_stay_open(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    engine = fake_engine_factory(models=["tiny"])
    args = [*static_args([engine]), "--admin-api-key-env", "ADMIN_KEYS"]
    args += ["--api-key-env", "CLIENT_KEYS"]
    env = {"ADMIN_KEYS": "ops-1,ops-2", "CLIENT_KEYS": "client-1"}
    with RouterProcess(args, env).start() as r, httpx.Client(base_url=r.url) as c:
        for path in ("/metrics", "/engines"):
            denied = c.get(path)
            assert denied.status_code == 401, path
            assert denied.json()["error"]["code"] == "invalid_api_key"
            assert c.get(path, headers={"authorization": "Bearer client-1"}).status_code == 401
            assert c.get(path, headers={"authorization": "Bearer ops-2"}).status_code == 200
        assert c.get("/health").status_code == 200
        assert c.get("/ready").status_code == 200
        ok = c.post(
            "/v1/completions",
            json={"model": "tiny", "prompt": "x", "max_tokens": 1},
            headers={"authorization": "Bearer client-1"},
        )
        assert ok.status_code == 200


def test_an_unset_admin_key_variable_is_refused_at_start(fake_engine_factory) -> None:  # type: ignore[no-untyped-def]
    engine = fake_engine_factory(models=["tiny"])
    args = [*static_args([engine]), "--admin-api-key-env", "NOT_SET_ANYWHERE"]
    with pytest.raises(RuntimeError, match="--admin-api-key-env names NOT_SET_ANYWHERE"):
        RouterProcess(args).start(timeout=30)
