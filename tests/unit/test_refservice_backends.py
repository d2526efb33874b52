"""The reference service's Redis probe, against real redis-server and Sentinel on loopback."""

import time

import redis

from seawall.refservice.backends import Redis
from seawall.refservice.config import ServiceConfig
from tests.unit.redis_server import Servers, servers

__all__ = ["servers"]  # the fixture, imported for pytest


def test_the_probe_follows_a_failover_instead_of_pinging_the_demoted_master(
    servers: Servers,
) -> None:
    master, replica = servers.pair()
    sentinel = servers.sentinel(master)
    config = ServiceConfig(
        service="probe", port=0, sentinels=(("127.0.0.1", sentinel.port),), redis_master="seawall"
    )
    backend = Redis(config)
    try:
        backend.ping()
        assert backend._probe._master == ("127.0.0.1", master.port)
        # A real failover, once the Sentinel has found and pinged the replica (it
        # answers NOGOODSLAVE until then); the probe's connection to the old master
        # stays open and would still answer PING.
        deadline = time.monotonic() + 30
        while True:
            try:
                sentinel.client().execute_command("SENTINEL", "FAILOVER", "seawall")
                break
            except redis.ResponseError as error:
                assert "NOGOODSLAVE" in str(error), error
                assert time.monotonic() < deadline, "the Sentinel never found the replica"
                time.sleep(0.2)
        while replica.client().execute_command("ROLE")[0] != b"master" or (
            master.client().execute_command("ROLE")[0] != b"slave"
        ):
            assert time.monotonic() < deadline, "the Sentinel's failover did not finish"
            time.sleep(0.05)
        backend.ping()
        assert backend._probe._master == ("127.0.0.1", replica.port)
    finally:
        backend.outbox_publisher.client.close()
        backend._probe.close()
