"""WECOM_STATE_URL's Redis forms: parsed into a target, refused with the setting's name, no password shown."""

from __future__ import annotations

import pytest

from worker.errors import SettingsError
from worker.redis_target import RedisTarget, parse_redis_url

SECRET = "pa55-w0rd-never-shown"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/2", RedisTarget("standalone", tls=False, nodes=(("127.0.0.1", 6380),), 2)),
        ("redis://redis.svc", RedisTarget("standalone", tls=False, nodes=(("redis.svc", 6379),), 0)),
        ("rediss://r:6379/0", RedisTarget("standalone", tls=True, nodes=(("r", 6379),), 0)),
        ("redis://[::1]:7000/1", RedisTarget("standalone", tls=False, nodes=(("::1", 7000),), 1)),
        (
            "redis+sentinel://s1:26379,s2:26380,s3/mymaster/3",
            RedisTarget("sentinel", tls=False, nodes=(("s1", 26379), ("s2", 26380), ("s3", 26379)), 3, "mymaster"
            ),
        ),
        (
            "redis+sentinel://s1:26379/mymaster",
            RedisTarget("sentinel", tls=False, nodes=(("s1", 26379),), 0, "mymaster"),
        ),
        (
            "redis+cluster://n1:7000,n2:7001",
            RedisTarget("cluster", tls=False, nodes=(("n1", 7000), ("n2", 7001)), 0),
        ),
        ("rediss+cluster://n1:7000/", RedisTarget("cluster", tls=True, nodes=(("n1", 7000),), 0)),
    ],
)
def test_every_form_parses_to_its_target(url: str, expected: RedisTarget) -> None:
    """Standalone, TLS, IPv6, Sentinel (with or without DB) and Cluster URLs give their targets."""
    assert parse_redis_url(url) == expected


def test_password_and_user_are_taken_and_never_shown() -> None:
    """``:PASSWORD@`` (percent-encoded) is kept for connecting but absent from repr and describe()."""
    target = parse_redis_url(f"redis+sentinel://:{SECRET}%40x@s1:1,s2:2/m/1")
    assert target.password == f"{SECRET}@x"
    assert target.username is None
    assert SECRET not in repr(target)
    assert target.describe() == "redis+sentinel://:***@s1:1,s2:2/m/1"
    acl = parse_redis_url(f"rediss://worker:{SECRET}@r:1/0")
    assert (acl.username, acl.password) == ("worker", SECRET)
    assert acl.describe() == "rediss://worker:***@r:1/0"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://h/0", "not a Redis one"),
        ("redis:/h/0", "not a URL"),
        ("redis://h:1,h:2/0", "names one HOST:PORT"),
        ("redis://h:99999/0", "port '99999'"),
        ("redis://h:abc/0", "port 'abc'"),
        ("redis://h:1/zero", "not a number"),
        ("redis://h:1/0/extra", "unexpected path"),
        ("redis://:1/0", "HOST is missing"),
        ("redis://h:1/0?ssl=true", "query parameters"),
        ("redis+sentinel://s:1", "master name"),
        ("redis+sentinel://s:1//0", "master name"),
        ("redis+cluster://n:1/3", "only database 0"),
        (f"redis://{SECRET}@h:1/0", ":PASSWORD"),
    ],
)
def test_malformed_urls_are_refused_naming_the_setting(url: str, complaint: str) -> None:
    """Each malformed URL is a SettingsError for WECOM_STATE_URL saying what is wrong and the forms."""
    with pytest.raises(SettingsError) as caught:
        parse_redis_url(url)
    assert caught.value.name == "WECOM_STATE_URL"
    assert complaint in caught.value.problem
    assert "redis+sentinel://" in caught.value.problem  # the right forms are listed
    assert SECRET not in str(caught.value)
