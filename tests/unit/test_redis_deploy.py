"""The Redis deploy's decisions on fake hosts, with no lab (issue 11, items 6 and 7).

``plan_redis`` makes every replication decision from facts alone; these hosts
answer only the facts a test gives them and raise on any other, as chatmail's
fake host does, so a decision that reads an unexpected fact fails here.
"""

from typing import Any

import pytest
from pyinfra.api import FactBase
from pyinfra.api.exceptions import ConnectError, DeployError
from pyinfra.api.util import get_kwargs_str
from pyinfra.facts.files import FindInFile

from seawall import redis_acl
from seawall.components.redis import (
    MANAGED_CONF,
    REDIS_DIR,
    RUNTIME_SETTINGS,
    SENTINEL_CONF,
    SENTINEL_MARKER,
    USERS_ACL,
    acl_ready,
    plan_redis,
    sentinel_updates,
)
from seawall.components.templates import render
from seawall.defaults import REDIS, SENTINEL
from seawall.facts.redis import RedisAclFile, RedisHasData, SentinelMaster

ADDRESSES = {"data-1": "10.77.0.11", "data-2": "10.77.0.12", "data-3": "10.77.0.13"}
M1, M2 = ("10.77.0.11", 6379), ("10.77.0.12", 6379)
SENTINEL_ARGS = {"port": 26379, "master": "platform"}


class MissingFact(AssertionError):
    """The deploy asked for a fact the test did not give."""


class FakeState:
    def __init__(self) -> None:
        self.failed_hosts: set[Any] = set()


class FakeHost:
    """A host answering only the facts it was given; ``reachable=False`` fails to connect."""

    def __init__(
        self, name: str, facts: dict[tuple[type, str], Any], reachable: bool = True, **data: Any
    ) -> None:
        self.name = name
        self.facts = facts
        self.reachable = reachable
        self.connected = reachable
        self.state = FakeState()
        self.data = {"private_address": ADDRESSES[name], **data}
        self.asked: list[str] = []

    def get_fact(self, fact: type[FactBase[Any]], **kwargs: Any) -> Any:
        self.asked.append(fact.__name__)
        if not self.reachable:
            raise ConnectError(f"{self.name}: could not connect")
        key = (fact, get_kwargs_str(kwargs))
        if key not in self.facts:
            raise MissingFact(f"{self.name}: {fact.__name__}({key[1]}) was not given")
        return self.facts[key]


def facts(
    sentinel: tuple[str, int] | None = None,
    has_data: bool | None = None,
    sentinel_written: bool | None = None,
) -> dict[tuple[type, str], Any]:
    given: dict[tuple[type, str], Any] = {(SentinelMaster, get_kwargs_str(SENTINEL_ARGS)): sentinel}
    if has_data is not None:
        given[(RedisHasData, get_kwargs_str({"dir": REDIS_DIR}))] = has_data
    if sentinel_written is not None:
        key = get_kwargs_str({"path": SENTINEL_CONF, "pattern": SENTINEL_MARKER})
        given[(FindInFile, key)] = ["# initial only..."] if sentinel_written else []
    return given


def cluster(*hosts: FakeHost) -> list[FakeHost]:
    return list(hosts)


def test_a_fact_not_given_fails() -> None:
    with pytest.raises(MissingFact):
        FakeHost("data-1", {}).get_fact(SentinelMaster, **SENTINEL_ARGS)


def test_the_majority_names_the_master_and_a_fresh_host_follows_it() -> None:
    this = FakeHost("data-3", facts(M1, has_data=False, sentinel_written=False))
    hosts = cluster(FakeHost("data-1", facts(M1)), FakeHost("data-2", facts(M2)), this)
    plan = plan_redis(this, hosts, hosts)
    assert plan.master == M1
    assert plan.replicaof == M1
    assert plan.sentinel_master == M1


def test_an_unreachable_sentinel_is_a_missing_vote_not_an_abort() -> None:
    this = FakeHost("data-1", facts(M1, has_data=True, sentinel_written=True))
    down = FakeHost("data-3", {}, reachable=False)
    hosts = cluster(this, FakeHost("data-2", facts(M1)), down)
    plan = plan_redis(this, hosts, hosts)
    assert plan.master == M1
    assert (plan.replicaof, plan.sentinel_master) == (None, None)


def test_a_host_pyinfra_already_failed_is_not_asked_again() -> None:
    this = FakeHost("data-1", facts(M1, has_data=True, sentinel_written=True))
    down = FakeHost("data-3", {}, reachable=False)
    down.connected = False
    down.state.failed_hosts.add(down)
    hosts = cluster(this, FakeHost("data-2", facts(M1)), down)
    assert plan_redis(this, hosts, hosts).master == M1
    assert down.asked == []


def test_sentinels_that_disagree_stop_the_deploy() -> None:
    this = FakeHost("data-1", facts(M1, has_data=True, sentinel_written=True))
    hosts = cluster(this, FakeHost("data-2", facts(M2)), FakeHost("data-3", {}, reachable=False))
    with pytest.raises(DeployError, match="data-1: no majority of the 3 Sentinels"):
        plan_redis(this, hosts, hosts)


def test_replicaof_is_written_on_first_install_only() -> None:
    for has_data, wanted in ((False, M1), (True, None)):
        this = FakeHost("data-2", facts(M1, has_data=has_data, sentinel_written=True))
        hosts = cluster(FakeHost("data-1", facts(M1)), this, FakeHost("data-3", facts(M1)))
        plan = plan_redis(this, hosts, hosts)
        assert plan.replicaof == wanted
        assert plan.initialised is has_data


def test_the_master_itself_gets_no_replicaof() -> None:
    this = FakeHost("data-1", facts(M1, has_data=True, sentinel_written=True))
    hosts = cluster(this, FakeHost("data-2", facts(M1)), FakeHost("data-3", facts(M1)))
    assert plan_redis(this, hosts, hosts).replicaof is None


def test_a_fresh_host_the_sentinels_still_call_master_is_refused() -> None:
    this = FakeHost("data-1", facts(M1, has_data=False, sentinel_written=True))
    hosts = cluster(this, FakeHost("data-2", facts(M1)), FakeHost("data-3", facts(M1)))
    with pytest.raises(DeployError, match="holds no data"):
        plan_redis(this, hosts, hosts)


def test_sentinel_conf_is_written_once() -> None:
    for written, wanted in ((False, M2), (True, None)):
        this = FakeHost("data-1", facts(M2, has_data=True, sentinel_written=written))
        hosts = cluster(this, FakeHost("data-2", facts(M2)), FakeHost("data-3", facts(M2)))
        assert plan_redis(this, hosts, hosts).sentinel_master == wanted


def _new_cluster(bootstrap: bool, third: FakeHost | None = None) -> tuple[FakeHost, list[FakeHost]]:
    data = {"redis_bootstrap": bootstrap}
    this = FakeHost("data-1", facts(None, has_data=False, sentinel_written=False), **data)
    second = FakeHost("data-2", facts(None, has_data=False), **data)
    return this, cluster(this, second, third or FakeHost("data-3", facts(None, has_data=False)))


def test_no_sentinel_and_no_bootstrap_flag_refuses_an_empty_master() -> None:
    this, hosts = _new_cluster(bootstrap=False)
    with pytest.raises(DeployError, match="redis_bootstrap is off"):
        plan_redis(this, hosts, hosts)


def test_bootstrap_starts_the_first_host_as_master_and_the_others_as_replicas() -> None:
    this, hosts = _new_cluster(bootstrap=True)
    plan = plan_redis(this, hosts, hosts)
    assert (plan.master, plan.replicaof, plan.sentinel_master) == (None, None, M1)
    second = hosts[1]
    second.facts.update(facts(None, has_data=False, sentinel_written=False))
    assert plan_redis(second, hosts, hosts).replicaof == M1


def test_bootstrap_is_refused_while_a_host_holds_data_or_cannot_be_asked() -> None:
    this, hosts = _new_cluster(True, FakeHost("data-3", facts(None, has_data=True)))
    with pytest.raises(DeployError, match="data-3 already hold Redis data"):
        plan_redis(this, hosts, hosts)
    this, hosts = _new_cluster(True, FakeHost("data-3", {}, reachable=False))
    with pytest.raises(DeployError, match="data-3 cannot be reached"):
        plan_redis(this, hosts, hosts)


def test_a_host_with_data_needs_no_sentinel_answer_and_no_bootstrap() -> None:
    this = FakeHost("data-1", facts(None, has_data=True, sentinel_written=True))
    hosts = cluster(this, FakeHost("data-2", facts(None)), FakeHost("data-3", facts(None)))
    plan = plan_redis(this, hosts, hosts)
    assert (plan.master, plan.replicaof, plan.sentinel_master) == (None, None, None)


def test_sentinel_set_only_what_the_live_sentinel_holds_otherwise() -> None:
    context = {**REDIS, **SENTINEL}
    live = {
        "quorum": "2",
        "down-after-milliseconds": "30000",
        "failover-timeout": "5000",
        "parallel-syncs": "1",
    }
    assert sentinel_updates(live, context) == [("down-after-milliseconds", "1500")]
    live["down-after-milliseconds"] = "1500"
    assert sentinel_updates(live, context) == []
    assert sentinel_updates(None, context) == []


def _acl(loaded: str | None) -> dict[tuple[type, str], Any]:
    return {(RedisAclFile, get_kwargs_str({"port": 6379})): loaded}


def test_acl_users_are_used_only_when_every_running_redis_has_them() -> None:
    loaded = [FakeHost(n, _acl(USERS_ACL)) for n in ADDRESSES]
    assert acl_ready(loaded) is True
    # One Redis started before the ACL file has no replica user yet: it would
    # refuse a replica logging in as `replica`.
    assert acl_ready([*loaded[:2], FakeHost("data-3", _acl(""))]) is False
    # One not running, or its host down (a redeploy during an outage): it reads
    # the file when it starts, so the move stays (no flip back and forth).
    assert acl_ready([*loaded[:2], FakeHost("data-3", _acl(None))]) is True
    assert acl_ready([*loaded[:2], FakeHost("data-3", {}, reachable=False)]) is True
    # A new cluster (no Redis runs yet) starts every Redis with the file: ready, so
    # its second deploy changes nothing.
    assert acl_ready([FakeHost(n, _acl(None)) for n in ADDRESSES]) is True


@pytest.mark.parametrize("ready", [True, False])
def test_seawall_conf_names_the_acl_file_and_the_replica_user_only_when_ready(
    ready: bool,
) -> None:
    context = {
        **REDIS,
        "private_address": "10.77.0.11",
        "redis_password": "admin-secret",
        "users_acl": USERS_ACL,
        "acl_ready": ready,
        "replica_user": redis_acl.REPLICA_USER,
        "replica_password": "replica-secret",
    }
    lines = render("redis", MANAGED_CONF, context).splitlines()
    assert f"aclfile {USERS_ACL}" in lines
    assert "requirepass admin-secret" in lines
    if ready:
        assert "masteruser replica" in lines and "masterauth replica-secret" in lines
    else:
        assert "masterauth admin-secret" in lines
        assert not [line for line in lines if line.startswith("masteruser")]
    # Applied live when they change: masteruser first, so a reconnect never pairs
    # the new password with no user.
    assert RUNTIME_SETTINGS[:2] == ("masteruser", "masterauth")


@pytest.mark.parametrize("ready", [True, False])
def test_sentinel_conf_logs_in_as_the_sentinel_user_only_when_ready(ready: bool) -> None:
    context = {
        **REDIS,
        **SENTINEL,
        "private_address": "10.77.0.11",
        "redis_password": "admin-secret",
        "sentinel_password": "sentinel-admin",
        redis_acl.SENTINEL_SECRET: "sentinel-user-secret",
        "sentinel_user": redis_acl.SENTINEL_USER,
        "acl_ready": ready,
        "master_host": "10.77.0.11",
        "master_port": 6379,
    }
    lines = render("redis", SENTINEL_CONF, context).splitlines()
    name = SENTINEL["sentinel_master_name"]
    if ready:
        assert f"sentinel auth-user {name} sentinel" in lines
        assert f"sentinel auth-pass {name} sentinel-user-secret" in lines
    else:
        assert f"sentinel auth-pass {name} admin-secret" in lines
        assert not [line for line in lines if "auth-user" in line]
