"""``[[webhooks]]`` / ``[webhooks_server]`` parsing: defaults, and errors that name the setting."""

from __future__ import annotations

import base64
import tomllib
from typing import Any

import pytest

from chainpush.push.errors import ConfigError
from chainpush.push.webhook_config import parse, topic_matches

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def entry(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "backend", "url": "https://api.example.com/hooks",
                            "secret": SECRET, "topics": ["contract:DemoToken", "user:*"]}
    base.update(kw)
    return base


def test_the_issue_example_parses_with_the_pinned_defaults() -> None:
    raw = tomllib.loads(f"""
[[webhooks]]
name = "backend"
url = "https://api.example.com/hooks/chainpush"
secret = "{SECRET}"
topics = ["contract:DemoToken", "user:*"]
""")
    settings = parse(raw)
    (hook,) = settings.webhooks
    assert hook.topics == ("contract:DemoToken", "user:*")
    assert hook.start == "first" and hook.timeout_s <= 10 and hook.max_backoff_s <= 30
    assert hook.batch_size == 1 and hook.key == b"s" * 32
    assert hook.wants("user:0xAb") and hook.wants("contract:DemoToken")
    assert not hook.wants("contract:Other")
    assert settings.server.port is None
    assert "whsec" not in repr(hook)  # the secret never shows in logs


def test_no_webhooks_is_fine() -> None:
    assert parse({}).webhooks == ()


@pytest.mark.parametrize(("change", "needle"), [
    ({"secret": "abc"}, "webhooks.backend.secret must start with 'whsec_'"),
    ({"secret": "whsec_!!!"}, "webhooks.backend.secret after 'whsec_' must be base64"),
    ({"secret": "whsec_" + base64.b64encode(b"short").decode()}, "at least 16 bytes"),
    ({"url": "ftp://x"}, "webhooks.backend.url must be an http"),
    ({"topics": []}, "webhooks.backend.topics must be a non-empty list"),
    ({"topics": "contract:X"}, "webhooks.backend.topics must be a list"),
    ({"topics": ["contract:*X"]}, "may hold * only at its end"),
    ({"start": "tail"}, "webhooks.backend.start must be 'first' or 'head'"),
    ({"timeout_s": 0}, "webhooks.backend.timeout_s must be a number > 0"),
    ({"max_backoff_s": 0.1, "first_backoff_s": 1}, "max_backoff_s must be >= first_backoff_s"),
    ({"max_failures": 0}, "webhooks.backend.max_failures must be an integer >= 1"),
    ({"batch_size": 501}, "webhooks.backend.batch_size must be an integer in 1..500"),
    ({"max_concurrency": 0}, "webhooks.backend.max_concurrency must be an integer >= 1"),
    ({"name": "a b"}, "name must be 1-64 characters"),
    ({"colour": "red"}, "unknown setting(s) in webhooks.backend: colour"),
])
def test_errors_name_the_webhook_and_setting(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({"webhooks": [entry(**change)]})
    assert needle in str(info.value)


def test_missing_keys_duplicates_and_server_errors() -> None:
    with pytest.raises(ConfigError, match=r"webhooks\.backend: missing secret, url"):
        parse({"webhooks": [{"name": "backend", "topics": ["x"]}]})
    with pytest.raises(ConfigError, match="name 'backend' is used twice"):
        parse({"webhooks": [entry(), entry()]})
    with pytest.raises(ConfigError, match="write \\[\\[webhooks\\]\\]"):
        parse({"webhooks": {"name": "x"}})
    with pytest.raises(ConfigError, match=r"webhooks_server\.port must be in 0\.\.65535"):
        parse({"webhooks_server": {"port": 70000}})
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) in \\[webhooks_server\\]: x"):
        parse({"webhooks_server": {"x": 1}})
    with pytest.raises(ConfigError, match="no webhook named 'nope'"):
        parse({"webhooks": [entry()]}).get("nope")


def test_secret_from_the_environment() -> None:
    raw = {"webhooks": [{k: v for k, v in entry(secret_env="HOOK_SECRET").items()
                         if k != "secret"}]}
    assert parse(raw, {"HOOK_SECRET": SECRET}).webhooks[0].key == b"s" * 32
    with pytest.raises(ConfigError, match="secret_env: environment variable 'HOOK_SECRET'"):
        parse(raw, {})


def test_topic_patterns() -> None:
    assert topic_matches("user:*", "user:0x1")
    assert topic_matches("*", "state:X")
    assert not topic_matches("user:*", "contract:X")
    assert topic_matches("contract:A", "contract:A")
    assert not topic_matches("contract:A", "contract:AB")


def test_cli_prints_the_checked_config_redacted_and_refuses_a_bad_one(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from chainpush.cli import main

    good = tmp_path / "good.toml"
    good.write_text(f'[[webhooks]]\nname = "backend"\nurl = "http://127.0.0.1:9/h"\n'
                    f'secret = "{SECRET}"\ntopics = ["user:*"]\nbatch_size = 5\n')
    assert main(["webhooks", "--config", str(good), "--print-config"]) == 0
    shown = capsys.readouterr().out
    assert '"batch_size": 5' in shown and "<redacted>" in shown and SECRET not in shown
    bad = tmp_path / "bad.toml"
    bad.write_text('[[webhooks]]\nname = "backend"\nurl = "http://x"\nsecret = "nope"\n'
                   'topics = ["user:*"]\n')
    assert main(["webhooks", "--config", str(bad), "status"]) == 2
    assert "webhooks.backend.secret must start with 'whsec_'" in capsys.readouterr().err
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert main(["webhooks", "--config", str(empty)]) == 2
    assert "no [[webhooks]]" in capsys.readouterr().err
