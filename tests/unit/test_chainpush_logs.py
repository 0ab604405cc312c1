"""Log hygiene helpers: client text escaped, URLs redacted, repeated lines throttled."""

from __future__ import annotations

import pytest

from chainpush.logs import Throttle, client_text, redact_credentials, redact_url


def test_client_text_cannot_forge_a_log_line() -> None:
    forged = "contract:A\n2026-12-01 INFO push.node: conn 1: user admin connected"
    shown = client_text(forged)
    assert "\n" not in shown and "\\n" in shown
    assert "\r" not in client_text("a\rb") and "\x1b" not in client_text("\x1b[2J")
    assert client_text("x" * 1000).endswith("…") and len(client_text("x" * 1000)) == 201
    assert client_text("contract:DemoToken") == "contract:DemoToken"


@pytest.mark.parametrize(("url", "shown"), [
    ("mongodb://app:s3cret@db.example.com:27017/chainpush?authSource=admin",
     "mongodb://app:***@db.example.com:27017/chainpush?authSource=admin"),
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://default:s3cret@[::1]:6380/1", "rediss://default:***@[::1]:6380/1"),
    ("mongodb://127.0.0.1:27018/?directConnection=true",
     "mongodb://127.0.0.1:27018/?directConnection=true"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
])
def test_redact_credentials_hides_passwords_only(url: str, shown: str) -> None:
    assert redact_credentials(url) == shown


@pytest.mark.parametrize(("url", "shown"), [
    ("https://eth-mainnet.g.alchemy.com/v2/AbCdEfKey123", "https://eth-mainnet.g.alchemy.com/***"),
    ("wss://mainnet.infura.io/ws/v3/0123456789abcdef", "wss://mainnet.infura.io/***"),
    ("https://rpc.example.com/?apikey=k3y", "https://rpc.example.com/***"),
    ("https://user:pw@rpc.example.com:8545", "https://user:***@rpc.example.com:8545"),
    ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
    ("ws://127.0.0.1:8545/", "ws://127.0.0.1:8545/"),
    ("/tmp/anvil.ipc", "/tmp/anvil.ipc"),
])
def test_redact_url_hides_path_query_and_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    for secret in ("AbCdEfKey123", "0123456789abcdef", "k3y", "pw@"):
        assert secret not in redact_url(url)


def test_throttle_lets_one_line_per_interval_and_counts_the_rest() -> None:
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    assert throttle.ready("a") == 0
    assert throttle.ready("a") is None and throttle.ready("a") is None
    assert throttle.ready("b") == 0  # keys are independent
    now[0] = 10.0
    assert throttle.ready("a") == 2
    assert throttle.ready("a") is None
