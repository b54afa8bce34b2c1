"""Real RabbitMQ and Redis for the tests, on 127.0.0.1, started once per run and only if needed.

Session fixtures:
    rabbitmq      ``RabbitMQNode`` this run started: ``.url``, ``.ctl(...)``, ``.restart()``.
    rabbitmq_with_prometheus  a second node with ``rabbitmq_prometheus`` (``.prometheus_port``),
                  started only when a test asks for it.
    amqp_url      ``amqp://guest:guest@127.0.0.1:PORT/`` (or ``WECOM_TEST_AMQP_URL``).
    redis_server  ``RedisServer`` this run started: ``.url``, ``.restart()``.
    redis_url     ``redis://127.0.0.1:PORT/0`` (or ``WECOM_TEST_REDIS_URL``).
Per-test fixtures:
    stack            ``tests.e2e.Stack``: the simulator here, worker processes on this test's queues.
    fresh_vhost      ``Vhost(name, url)``: an empty vhost only this test uses, deleted afterwards.
    queue_prefix     a unique ``str`` to start the names of queues and exchanges a test declares.
    fresh_redis_url  URL of a Redis database emptied for this test (rotating over 1..15).
    make_redis       ``make_redis(**options) -> RedisServer``: a Redis of this test's own (to
                     stop, pause, wipe or start without persistence), closed after the test.
Session fixtures started on first use only:
    redis_sentinel   ``RedisSentinelGroup``: master, replica, three sentinels; ``.url``.
    redis_cluster    ``RedisClusterGroup``: three cluster masters; ``.url``.

With ``WECOM_TEST_AMQP_URL`` / ``WECOM_TEST_REDIS_URL`` set, nothing is started and the fixtures
that need the process itself (``rabbitmq``, ``fresh_vhost``, ``redis_server``, ``make_redis``,
``redis_sentinel``, ``redis_cluster``) skip. The broker
boots (~2.5 s) in the background as soon as collection shows a test will need it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
import redis

from tests.e2e import stack
from tests.services import (
    RabbitMQNode,
    RedisClusterGroup,
    RedisSentinelGroup,
    RedisServer,
    ServiceError,
    Vhost,
    VhostPool,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

AMQP_URL_VARIABLE = "WECOM_TEST_AMQP_URL"
REDIS_URL_VARIABLE = "WECOM_TEST_REDIS_URL"
_BROKER_FIXTURES = frozenset({"rabbitmq", "amqp_url", "fresh_vhost"})
_REDIS_TEST_DBS = range(1, 16)  # every Redis has databases 0-15; 0 is redis_url's


@dataclass
class _Services:
    """The services this run started, created on first use and closed when pytest ends."""

    amqp_url: str | None = field(default_factory=lambda: os.environ.get(AMQP_URL_VARIABLE))
    redis_url: str | None = field(default_factory=lambda: os.environ.get(REDIS_URL_VARIABLE))
    node: RabbitMQNode | None = None
    prometheus_node: RabbitMQNode | None = None
    vhosts: VhostPool | None = None
    redis: RedisServer | None = None
    sentinel: RedisSentinelGroup | None = None
    cluster: RedisClusterGroup | None = None
    redis_dbs: Iterator[int] = field(default_factory=lambda: itertools.cycle(_REDIS_TEST_DBS))

    def rabbitmq_node(self) -> RabbitMQNode:
        if self.amqp_url:
            pytest.skip(f"{AMQP_URL_VARIABLE} is set: this test needs a broker the run controls")
        if self.node is None:
            self.node = RabbitMQNode()
        return self.node

    def rabbitmq_prometheus_node(self) -> RabbitMQNode:
        if self.amqp_url:
            pytest.skip(f"{AMQP_URL_VARIABLE} is set: this test needs a broker the run controls")
        if self.prometheus_node is None:
            self.prometheus_node = RabbitMQNode(prometheus=True)
        return self.prometheus_node

    def redis_server(self) -> RedisServer:
        if self.redis_url:
            pytest.skip(f"{REDIS_URL_VARIABLE} is set: this test needs a Redis the run controls")
        if self.redis is None:
            self.redis = RedisServer()
        return self.redis

    def own_redis_allowed(self) -> None:
        if self.redis_url:
            pytest.skip(f"{REDIS_URL_VARIABLE} is set: this test needs Redis servers of its own")

    def redis_sentinel(self) -> RedisSentinelGroup:
        self.own_redis_allowed()
        if self.sentinel is None:
            self.sentinel = RedisSentinelGroup()
            self.sentinel.start()
        return self.sentinel

    def redis_cluster(self) -> RedisClusterGroup:
        self.own_redis_allowed()
        if self.cluster is None:
            self.cluster = RedisClusterGroup()
            self.cluster.start()
        return self.cluster

    def close(self) -> None:
        if self.vhosts is not None:
            self.vhosts.close()
        for service in (self.node, self.prometheus_node, self.redis, self.sentinel, self.cluster):
            if service is not None:
                service.close()


_SERVICES = pytest.StashKey[_Services]()


def pytest_configure(config: pytest.Config) -> None:
    """Prepare the (not yet started) services."""
    config.stash[_SERVICES] = _Services()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Boot the broker while the tests before the first one that needs it run."""
    services = session.config.stash[_SERVICES]
    wanted = (
        _BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())) for item in session.items
    )
    if not services.amqp_url and any(wanted):
        with contextlib.suppress(ServiceError):  # not installed: the fixture says so in each test
            services.rabbitmq_node().launch()
    with_prometheus = (
        "rabbitmq_with_prometheus" in getattr(item, "fixturenames", ()) for item in session.items
    )
    if not services.amqp_url and any(with_prometheus):
        with contextlib.suppress(ServiceError):
            services.rabbitmq_prometheus_node().launch()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop whatever the run started and delete its data."""
    config.stash[_SERVICES].close()


@pytest.fixture(scope="session")
def rabbitmq(pytestconfig: pytest.Config) -> RabbitMQNode:
    """The RabbitMQ node of this run, started; a test that stops it starts it again."""
    node = pytestconfig.stash[_SERVICES].rabbitmq_node()
    node.start()
    return node


@pytest.fixture(scope="session")
def rabbitmq_with_prometheus(pytestconfig: pytest.Config) -> RabbitMQNode:
    """A RabbitMQ node with the rabbitmq_prometheus plugin, for the deploy/ live test."""
    node = pytestconfig.stash[_SERVICES].rabbitmq_prometheus_node()
    node.start()
    return node


@pytest.fixture(scope="session")
def amqp_url(request: pytest.FixtureRequest) -> str:
    """The AMQP URL of the default vhost ``/`` of the test broker."""
    override = request.config.stash[_SERVICES].amqp_url
    if override:
        return override
    node: RabbitMQNode = request.getfixturevalue("rabbitmq")
    return node.url


@pytest.fixture
def fresh_vhost(rabbitmq: RabbitMQNode, pytestconfig: pytest.Config) -> Iterator[Vhost]:
    """An empty vhost only this test uses (guest has all permissions); deleted afterwards."""
    rabbitmq.start()  # in case an earlier test stopped it
    services = pytestconfig.stash[_SERVICES]
    if services.vhosts is None:
        services.vhosts = VhostPool(rabbitmq)
    vhost = services.vhosts.take()
    yield vhost
    services.vhosts.give_back(vhost)


@pytest.fixture
def queue_prefix() -> str:
    """A prefix no other test uses, for queue and exchange names on a shared vhost."""
    return f"test-{uuid.uuid4().hex[:12]}."


@pytest.fixture(scope="session")
def redis_server(pytestconfig: pytest.Config) -> RedisServer:
    """The Redis of this run (AOF fsynced on every write); a test that stops it starts it again."""
    server = pytestconfig.stash[_SERVICES].redis_server()
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The URL of database 0 of the test Redis."""
    override = request.config.stash[_SERVICES].redis_url
    if override:
        return override
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def fresh_redis_url(redis_url: str, pytestconfig: pytest.Config) -> str:
    """The URL of a database of the test Redis, emptied for this test (not database 0)."""
    services = pytestconfig.stash[_SERVICES]
    if services.redis is not None:
        services.redis.start()  # in case an earlier test stopped it
    index = next(services.redis_dbs)
    url = urlsplit(redis_url)._replace(path=f"/{index}").geturl()
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
def make_redis(pytestconfig: pytest.Config) -> Iterator[Callable[..., RedisServer]]:
    """Starts Redis servers of this test's own (``RedisServer`` options); closes them after."""
    pytestconfig.stash[_SERVICES].own_redis_allowed()
    started: list[RedisServer] = []

    def make(**options: Any) -> RedisServer:
        server = RedisServer(**options)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.resume()  # a paused server would not answer SIGTERM
        server.close()


@pytest.fixture(scope="session")
def redis_sentinel(pytestconfig: pytest.Config) -> RedisSentinelGroup:
    """A Sentinel group of this run (started on first use): master, replica, three sentinels."""
    return pytestconfig.stash[_SERVICES].redis_sentinel()


@pytest.fixture(scope="session")
def redis_cluster(pytestconfig: pytest.Config) -> RedisClusterGroup:
    """A 3-master Redis Cluster of this run, started on first use."""
    return pytestconfig.stash[_SERVICES].redis_cluster()


__all__ = ["stack"]  # the end-to-end fixture, defined beside its helpers in tests/e2e.py
