import pytest
from pdrouter.config import KvTransport, RoutingLogic, SettingsError, load_settings

STATIC = ["--static-backends", "http://a:1,http://b:2", "--static-models", "m,m"]


def test_flags_env_and_file_with_precedence(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "router.yaml"
    cfg.write_text("port: 9001\nrouting_logic: session\nsession_key: x-tenant\n")
    env = {"PDSTACK_ROUTER_PORT": "9002", "PDSTACK_ROUTER_CONFIG": str(cfg)}
    s = load_settings([*STATIC, "--session-key", "x-user"], env)
    assert s.port == 9002  # env beats file
    assert s.routing_logic is RoutingLogic.SESSION  # file beats default
    assert s.session_key == "x-user"  # flag beats all
    assert s.static_backends == ["http://a:1", "http://b:2"]


def test_production_stack_routing_name_is_accepted() -> None:
    s = load_settings([*STATIC, "--routing-logic", "disaggregated_prefill"], {})
    assert s.routing_logic is RoutingLogic.DISAGG_PREFILL and s.kv_transport is KvTransport.NIXL


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--static-backends", "http://a:1", "--static-models", "m,n"], "--static-models"),
        ([*STATIC, "--static-roles", "prefill,dcode"], "dcode"),
        (["--static-backends", "a:1", "--static-models", "m"], "http://"),
        ([*STATIC, "--port", "70000"], "--port"),
        (["--service-discovery", "k8s"], "--k8s-label-selector"),
        ([*STATIC, "--kv-transport", "lmcache", "--workers", "2"], "--workers 1"),
        ([*STATIC, "--static-kv-events-ports", "5557"], "--static-kv-events-ports"),
        ([*STATIC, "--static-kv-events-ports", "5557,x"], "not a port"),
        ([*STATIC, "--pd-min-uncached-tokens", "64"], "needs --kv-events"),
    ],
)
def test_bad_settings_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(argv, {})
    assert message in str(info.value)


def test_unknown_file_key_is_rejected(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "router.yaml"
    cfg.write_text("rounting_logic: session\n")
    with pytest.raises(SettingsError, match="rounting_logic"):
        load_settings([*STATIC, "--config", str(cfg)], {})
