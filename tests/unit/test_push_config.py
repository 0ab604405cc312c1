"""Settings: validation messages name the setting; TOML, environment and flags combine."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainpush.push.config import PushConfig, StoresConfig, load
from chainpush.push.errors import ConfigError
from chainpush.push.metrics import Metrics
from chainpush.push.ratelimit import TokenBucket
from chainpush.push.retry import RetryPolicy
from chainpush.push.tokens import DEV_SECRET

SECRET = "z" * 40


@pytest.mark.parametrize(("kw", "name"), [
    ({"auth_timeout_s": 0}, "push.auth_timeout_s"),
    ({"max_frame_bytes": 0}, "push.max_frame_bytes"),
    ({"port": 70000}, "push.port"),
    ({"heartbeat_s": 5, "node_ttl_s": 5}, "push.node_ttl_s"),
    ({"metrics_port": -1}, "push.metrics_port"),
    ({"metrics_port": 65535, "workers": 2, "port": 8701}, "push.metrics_port"),
    ({"metrics_port": 0, "workers": 2, "port": 8701}, "push.metrics_port"),
    ({"metrics_port": "9470"}, "push.metrics_port"),
])
def test_push_config_names_the_setting(kw: dict[str, float], name: str) -> None:
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        PushConfig(**kw)  # type: ignore[arg-type]


def test_metrics_port_leaves_room_for_every_worker() -> None:
    assert PushConfig(metrics_port=65534, workers=2, port=8701).metrics_port == 65534
    assert PushConfig(metrics_port=0).metrics_port == 0  # one node: any free port


def test_stores_config() -> None:
    with pytest.raises(ConfigError, match="mongo_uri"):
        StoresConfig(mongo_uri="http://x")
    with pytest.raises(ConfigError, match="redis_url"):
        StoresConfig(redis_url="mongodb://x")


def test_load_toml_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "chainpush.toml"
    path.write_text(
        '[stores]\ndatabase = "db1"\n[push]\nport = 9000\nallowed_origins = ["http://a"]\n'
        f'[auth]\nsecret = "{SECRET}"\ntoken_ttl_s = 60\nissuer = ""\n'
        '[node]\nurls = ["x"]\n[[contracts]]\nname = "A"\n'  # the watcher's: ignored here
    )
    s = load(path, dev_mode=False, overrides={"push": {"port": 9100, "node_id": None}})
    assert s.stores.database == "db1"
    assert s.push.port == 9100 and s.push.node_id == "push-1"
    assert s.push.allowed_origins == ("http://a",)
    assert s.tokens.secret == SECRET and s.tokens.issuer is None
    assert s.auth.token_ttl_s == 60
    assert not s.dev_mode


def test_load_refuses_weak_secret_outside_dev_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth\.secret"):
        load(None, dev_mode=False)
    assert load(None, dev_mode=True).tokens.secret == DEV_SECRET
    assert load(None, dev_mode=False, secret_from_env=SECRET).tokens.secret == SECRET


def test_load_rejects_unknown_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[push]\nportt = 1\n")
    with pytest.raises(ConfigError, match=r"\[push\]: .*portt|portt"):
        load(path, dev_mode=True)
    path.write_text("[auth]\nsecrett = 1\n")
    with pytest.raises(ConfigError, match="secrett"):
        load(path, dev_mode=True)
    path.write_text("not toml [")
    with pytest.raises(ConfigError, match="cannot read"):
        load(path, dev_mode=True)


def test_token_bucket_with_a_fake_clock() -> None:
    bucket = TokenBucket(rate_per_s=2, burst=3)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow(0.5)  # one token back after half a second
    assert not bucket.allow(0.5)
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False]  # capped


def test_metrics_render_prometheus_text() -> None:
    m = Metrics()
    m.counter("a_total", "things")
    m.inc("a_total", 2)
    m.gauge("b", "level", lambda: 1.5)
    text = m.render()
    assert "# TYPE a_total counter\na_total 2\n" in text
    assert "# HELP b level\n# TYPE b gauge\nb 1.5\n" in text


def test_retry_policy() -> None:
    import random

    policy = RetryPolicy(first_delay_s=0.1, max_delay_s=1.0)
    rng = random.Random(1)
    assert 0.05 <= policy.delay_s(1, rng) <= 0.1
    assert 0.5 <= policy.delay_s(10, rng) <= 1.0
    with pytest.raises(ConfigError, match="max_tries"):
        RetryPolicy(max_tries=0)


# --- booleans: strict everywhere (issue 10 item 1) -------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("1", True), ("true", True), ("TRUE", True), ("Yes", True), (" on ", True),
    ("0", False), ("false", False), ("False", False), ("NO", False), ("off", False),
])
def test_env_booleans_parse_strictly(text: str, value: bool) -> None:
    from chainpush.flags import env_bool

    assert env_bool({"CHAINPUSH_DEV": text}, "CHAINPUSH_DEV") is value


@pytest.mark.parametrize("text", ["maybe", "flase", "2", "-1", "t", "y", "enabled"])
def test_env_boolean_typos_are_errors_naming_the_variable(text: str) -> None:
    from chainpush.flags import InvalidBoolean, env_bool

    with pytest.raises(InvalidBoolean, match="CHAINPUSH_DEV"):
        env_bool({"CHAINPUSH_DEV": text}, "CHAINPUSH_DEV")


def test_env_boolean_unset_or_empty_is_not_given() -> None:
    from chainpush.flags import env_bool

    assert env_bool({}, "CHAINPUSH_DEV") is None
    assert env_bool({"CHAINPUSH_DEV": ""}, "CHAINPUSH_DEV") is None


@pytest.mark.parametrize("value", ['"false"', '"true"', '"0"', "0", "1"])
def test_toml_booleans_must_be_booleans(tmp_path: Path, value: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[auth]\nsecret = "{SECRET}"\ndev_mode = {value}\n')
    with pytest.raises(ConfigError, match=r"\[auth\] dev_mode must be a TOML boolean"):
        load(path, dev_mode=None)
    path.write_text(f'[auth]\nsecret = "{SECRET}"\n[push]\ncompression = {value}\n')
    with pytest.raises(ConfigError, match=r"\[push\] compression must be a TOML boolean"):
        load(path, dev_mode=None)


def test_toml_dev_mode_false_is_off_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[auth]\nsecret = "{SECRET}"\ndev_mode = false\n[push]\ncompression = true\n')
    s = load(path, dev_mode=None)
    assert not s.dev_mode and not s.dev_login and s.push.compression
    assert load(path, dev_mode=None, dev_default=True).dev_mode is False  # the file said so
    s = load(path, dev_mode=True)
    assert s.dev_mode and s.dev_explicit and s.dev_login
    path.write_text(f'[auth]\nsecret = "{SECRET}"\ndev_mode = true\n')
    assert load(path, dev_mode=None).dev_login
    assert not load(path, dev_mode=False).dev_mode


def test_dev_login_refuses_a_real_secret_unless_dev_mode_is_explicit() -> None:
    # `chainpush run` defaults to dev mode: with the dev secret the dev login is on ...
    s = load(None, dev_mode=None, dev_default=True)
    assert s.dev_mode and not s.real_key and s.dev_login
    # ... beside a real secret it is off, unless dev mode was asked for
    s = load(None, dev_mode=None, dev_default=True, secret_from_env=SECRET)
    assert s.dev_mode and s.real_key and not s.dev_login
    assert load(None, dev_mode=True, secret_from_env=SECRET).dev_login
    assert not load(None, dev_mode=None, secret_from_env=SECRET).dev_mode
