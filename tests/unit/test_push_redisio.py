"""redis_url parsing: ``?cluster=true`` selects the cluster client, strictly."""

from __future__ import annotations

import pytest

from chainpush.push.config import StoresConfig
from chainpush.push.errors import ConfigError
from chainpush.push.redisio import RedisTarget


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6390/0", RedisTarget("redis://127.0.0.1:6390/0", False)),
    ("redis://h:1/0?cluster=false", RedisTarget("redis://h:1/0", False)),
    ("redis://h:1/0?cluster=true", RedisTarget("redis://h:1", True)),
    ("redis://h:1?cluster=yes&ssl_cert_reqs=none",
     RedisTarget("redis://h:1?ssl_cert_reqs=none", True)),
    ("rediss://:pw@h:1/?cluster=ON", RedisTarget("rediss://:pw@h:1", True)),
])
def test_parse(url: str, expected: RedisTarget) -> None:
    assert RedisTarget.parse(url) == expected


@pytest.mark.parametrize(("url", "needle"), [
    ("redis://h:1/0?cluster=maybe", "cluster must be one of"),
    ("redis://:secret@h:1/3?cluster=true", "only database 0"),
])
def test_bad_urls_name_the_problem_and_not_the_password(url: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        RedisTarget.parse(url)
    assert "secret" not in str(info.value)
    with pytest.raises(ConfigError, match=r"stores\.redis_url"):
        StoresConfig(redis_url=url)
