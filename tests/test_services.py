"""The test services are real: quorum queues keep confirmed messages, Redis keeps its AOF."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest
import redis
import redis.asyncio
from pamqp.commands import Basic

from tests.services import (
    RabbitMQNode,
    RedisClusterGroup,
    RedisSentinelGroup,
    RedisServer,
    ServiceError,
    Vhost,
    executable,
)


async def declare_quorum_queue(
    channel: aio_pika.abc.AbstractChannel, name: str
) -> aio_pika.abc.AbstractQueue:
    """Declare (or find) the durable quorum queue ``name``."""
    return await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})


async def publish_confirmed(url: str, queue_name: str, bodies: list[bytes]) -> None:
    """Declare a durable quorum queue and publish persistent messages, each confirmed."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_quorum_queue(channel, queue_name)
        for body in bodies:
            confirmation = await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue_name,
                mandatory=True,
            )
            assert isinstance(confirmation, Basic.Ack)


async def consume(url: str, queue_name: str, count: int) -> list[bytes]:
    """Consume and ack ``count`` messages from a durable quorum queue."""
    bodies: list[bytes] = []
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await declare_quorum_queue(channel, queue_name)
        async with asyncio.timeout(10), queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                bodies.append(message.body)
                if len(bodies) == count:
                    break
    return bodies


@pytest.mark.integration
async def test_quorum_queue_round_trip_with_publisher_confirms(
    amqp_url: str, queue_prefix: str
) -> None:
    """A message the broker confirmed on a durable quorum queue reaches a consumer."""
    queue_name = f"{queue_prefix}cards"
    await publish_confirmed(amqp_url, queue_name, [b"hello"])

    received = await consume(amqp_url, queue_name, 1)

    assert received == [b"hello"]
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.queue_delete(queue_name)


@pytest.mark.integration
async def test_confirmed_messages_survive_a_broker_restart(
    rabbitmq: RabbitMQNode, fresh_vhost: Vhost
) -> None:
    """Messages confirmed on a quorum queue before a restart are all delivered, in order, after."""
    bodies = [f"update-{n}".encode() for n in range(5)]
    await publish_confirmed(fresh_vhost.url, "backlog", bodies)
    listed = rabbitmq.ctl("list_queues", "-p", fresh_vhost.name, "name", "type", "durable")
    assert listed.split() == ["name", "type", "durable", "backlog", "quorum", "true"]

    await asyncio.to_thread(rabbitmq.restart)

    assert await consume(fresh_vhost.url, "backlog", len(bodies)) == bodies


@pytest.mark.integration
async def test_fresh_vhost_does_not_see_queues_of_other_vhosts(
    rabbitmq: RabbitMQNode, fresh_vhost: Vhost
) -> None:
    """A queue declared on ``/`` does not exist in the test's own vhost."""
    async with await aio_pika.connect(rabbitmq.url) as connection:
        channel = await connection.channel()
        await channel.declare_queue("elsewhere", auto_delete=True)

        async with await aio_pika.connect(fresh_vhost.url) as isolated:
            isolated_channel = await isolated.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await isolated_channel.declare_queue("elsewhere", passive=True)


@pytest.mark.integration
async def test_redis_keeps_writes_across_a_restart(
    redis_server: RedisServer, fresh_redis_url: str
) -> None:
    """With no RDB snapshots, a key written before a restart is read back from the AOF."""
    async with redis.asyncio.Redis.from_url(fresh_redis_url) as client:
        await client.set("claim:cmd-1", "done")
        config = await client.config_get("*")
    assert (config["appendonly"], config["appendfsync"], config["save"]) == ("yes", "always", "")
    assert config["maxmemory-policy"] == "noeviction"

    await asyncio.to_thread(redis_server.restart)

    async with redis.asyncio.Redis.from_url(fresh_redis_url) as client:
        assert await client.get("claim:cmd-1") == b"done"


@pytest.mark.integration
async def test_fresh_redis_url_is_an_empty_database_apart_from_redis_url(
    redis_url: str, fresh_redis_url: str
) -> None:
    """A key in database 0 is not seen through the per-test URL, whose database starts empty."""
    async with redis.asyncio.Redis.from_url(redis_url) as shared:
        await shared.set("shared-key", "x", ex=60)
        async with redis.asyncio.Redis.from_url(fresh_redis_url) as fresh:
            assert await fresh.dbsize() == 0
        await shared.delete("shared-key")


def listening_addresses(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses of the TCP sockets listening on ``port``, read from /proc/net."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for table in ("tcp", "tcp6"):
        for line in Path("/proc/net", table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(ipaddress.ip_address(words))
    return found


@pytest.mark.integration
def test_services_listen_on_loopback_only(
    rabbitmq: RabbitMQNode, redis_server: RedisServer
) -> None:
    """AMQP, Erlang distribution, epmd and Redis all listen on loopback addresses and no other."""
    ports = [rabbitmq.port, rabbitmq.dist_port, rabbitmq.epmd_port, redis_server.port]

    addresses = {port: listening_addresses(port) for port in ports}

    assert all(addresses.values()), addresses
    assert all(address.is_loopback for found in addresses.values() for address in found), addresses


def test_missing_program_names_the_package_and_the_install_script() -> None:
    """A missing binary fails with the Debian package to install and the script that does it."""
    with pytest.raises(ServiceError, match=r"package rabbitmq-server.*ensure-system-packages\.sh"):
        executable("/nonexistent/rabbitmq-server", "rabbitmq-server")


def test_a_wiped_redis_starts_empty(make_redis: Callable[..., RedisServer]) -> None:
    """wipe() deletes the data, AOF included: the next start is a Redis that lost its disk."""
    server = make_redis()
    with redis.Redis(port=server.port) as client:
        client.set("kept", "1")
    server.restart()
    with redis.Redis(port=server.port) as client:
        assert client.get("kept") == b"1"
    server.wipe()
    server.start()
    with redis.Redis(port=server.port) as client:
        assert client.get("kept") is None


@pytest.mark.integration
def test_sentinel_group_and_cluster_listen_on_loopback_only(
    redis_sentinel: RedisSentinelGroup, redis_cluster: RedisClusterGroup
) -> None:
    """The Sentinel group's servers and sentinels, and the cluster's nodes and bus, use loopback."""
    ports = [server.port for server in redis_sentinel.servers]
    ports += [sentinel.port for sentinel in redis_sentinel.sentinels]
    ports += [server.port for server in redis_cluster.servers]
    ports += redis_cluster.bus_ports
    addresses = {port: listening_addresses(port) for port in ports}
    assert all(addresses.values()), addresses
    assert all(address.is_loopback for found in addresses.values() for address in found), addresses
