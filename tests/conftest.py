"""Real RabbitMQ and Redis for the tests, on 127.0.0.1, started once per run and only if needed.

Session fixtures:
    rabbitmq      ``RabbitMQNode`` this run started: ``.url``, ``.ctl(...)``, ``.restart()``.
    amqp_url      ``amqp://guest:guest@127.0.0.1:PORT/`` (or ``WECOM_TEST_AMQP_URL``).
    redis_server  ``RedisServer`` this run started: ``.url``, ``.restart()``.
    redis_url     ``redis://127.0.0.1:PORT/0`` (or ``WECOM_TEST_REDIS_URL``).
Per-test fixtures:
    stack            ``tests.e2e.Stack``: the simulator here, worker processes on this test's queues.
    fresh_vhost      ``Vhost(name, url)``: an empty vhost only this test uses, deleted afterwards.
    queue_prefix     a unique ``str`` to start the names of queues and exchanges a test declares.
    fresh_redis_url  URL of a Redis database emptied for this test (rotating over 1..15).

With ``WECOM_TEST_AMQP_URL`` / ``WECOM_TEST_REDIS_URL`` set, nothing is started and the fixtures
that need the process itself (``rabbitmq``, ``fresh_vhost``, ``redis_server``) skip. The broker
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
from tests.services import RabbitMQNode, RedisServer, ServiceError, Vhost, VhostPool

if TYPE_CHECKING:
    from collections.abc import Iterator

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
    vhosts: VhostPool | None = None
    redis: RedisServer | None = None
    redis_dbs: Iterator[int] = field(default_factory=lambda: itertools.cycle(_REDIS_TEST_DBS))

    def rabbitmq_node(self) -> RabbitMQNode:
        if self.amqp_url:
            pytest.skip(f"{AMQP_URL_VARIABLE} is set: this test needs a broker the run controls")
        if self.node is None:
            self.node = RabbitMQNode()
        return self.node

    def redis_server(self) -> RedisServer:
        if self.redis_url:
            pytest.skip(f"{REDIS_URL_VARIABLE} is set: this test needs a Redis the run controls")
        if self.redis is None:
            self.redis = RedisServer()
        return self.redis

    def close(self) -> None:
        if self.vhosts is not None:
            self.vhosts.close()
        for service in (self.node, self.redis):
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


__all__ = ["stack"]  # the end-to-end fixture, defined beside its helpers in tests/e2e.py
