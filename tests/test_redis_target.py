"""WECOM_STATE_URL's Redis forms: parsed into a target, refused with the setting's name, no password shown."""

from __future__ import annotations

from typing import Any

import pytest

from worker.errors import SettingsError
from worker.redis_target import RedisTarget, parse_redis_url

SECRET = "pa55-w0rd-never-shown"


def target(kind: str, *nodes: tuple[str, int], db: int = 0, **more: Any) -> RedisTarget:
    """The RedisTarget a URL should give."""
    return RedisTarget(kind, nodes=nodes, db=db, tls=more.pop("tls", False), **more)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/2", target("standalone", ("127.0.0.1", 6380), db=2)),
        ("redis://redis.svc", target("standalone", ("redis.svc", 6379))),
        ("rediss://r:6379/0", target("standalone", ("r", 6379), tls=True)),
        ("redis://[::1]:7000/1", target("standalone", ("::1", 7000), db=1)),
        (
            "redis+sentinel://s1:26379,s2:26380,s3/mymaster/3",
            target(
                "sentinel",
                ("s1", 26379),
                ("s2", 26380),
                ("s3", 26379),
                db=3,
                master_name="mymaster",
            ),
        ),
        ("redis+sentinel://s1:26379/m", target("sentinel", ("s1", 26379), master_name="m")),
        ("redis+cluster://n1:7000,n2:7001", target("cluster", ("n1", 7000), ("n2", 7001))),
        ("rediss+cluster://n1:7000/", target("cluster", ("n1", 7000), tls=True)),
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
