"""Redis ACL users (seawall/redis_acl.py) on real redis-server processes on loopback.

Each test loads the ACL file seawall renders, so a rule Redis refuses, or one
that grants too much or too little, fails here before any host loads it.
"""

import os
import subprocess
import time
from pathlib import Path

import pytest
import redis
from redis.sentinel import Sentinel

from seawall import redis_acl
from seawall.components.templates import render
from seawall.defaults import REDIS
from seawall.refservice.config import from_dict
from seawall.runtime.reconnect import EventPublisher, MajorityClient, RedisSettings
from tests.unit.redis_server import RedisServer, Servers, servers, wait_for_link

__all__ = ["servers"]  # the fixture, imported for pytest

PREFIX = "quantum-"
SERVICES = ["execution", "ai-engine"]
PASSWORDS = {
    name: f"pw-{name}"
    for name in [*redis_acl.all_secrets(SERVICES), redis_acl.SENTINEL_CLIENT_SECRET]
}
ADMIN = PASSWORDS[redis_acl.ADMIN_SECRET]


class AclServer(RedisServer):
    """A redis-server whose own checks (start, wait_for_link) log in as the admin."""

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=ADMIN, socket_timeout=2)


def acl_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.acl"
    if not path.exists():
        path.write_text(redis_acl.acl_file(PREFIX, SERVICES, PASSWORDS))
    return path


def start(servers: Servers, tmp_path: Path, *options: str) -> AclServer:
    # DEBUG is on for local connections, so only the ACL can refuse it below.
    server = AclServer(
        servers.directory / f"redis-{len(servers.started)}",
        "--aclfile",
        str(acl_file(tmp_path)),
        "--enable-debug-command",
        "local",
        *options,
    )
    servers.started.append(server)
    return server.start()  # type: ignore[return-value]


def login(server: RedisServer, user: str, secret: str) -> redis.Redis:
    return redis.Redis(
        port=server.port, username=user, password=PASSWORDS[secret], socket_timeout=2
    )


def service(server: RedisServer, name: str) -> redis.Redis:
    return login(server, redis_acl.service_user(PREFIX, name), redis_acl.service_secret(name))


def test_a_service_reaches_its_own_keys_and_the_shared_streams_only(
    servers: Servers, tmp_path: Path
) -> None:
    server = start(servers, tmp_path)
    execution = service(server, "execution")
    own = redis_acl.key_prefix("execution") + "state"
    assert execution.set(own, "1") is True
    assert execution.xadd("quantum:stream:order_created", {"n": "1"})
    assert execution.hset("seawall:producers", "execution", "1") == 1
    other = redis_acl.key_prefix("ai-engine") + "state"
    server.client().set(other, "theirs")
    for attempt in (
        lambda: execution.get(other),
        lambda: execution.set(other, "mine"),
        lambda: execution.get("unprefixed"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
            attempt()
    assert server.client().get(other) == b"theirs"


@pytest.mark.parametrize(
    "command",
    [
        ("CONFIG", "SET", "maxmemory", "1"),
        ("CONFIG", "GET", "requirepass"),
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("DEBUG", "SLEEP", "0"),
        ("KEYS", "*"),
        ("SHUTDOWN", "NOSAVE"),
        ("REPLICAOF", "127.0.0.1", "1"),
        ("ACL", "SETUSER", "x", "on", "+@all"),
        ("SCRIPT", "FLUSH"),
        ("CLIENT", "KILL", "TYPE", "normal"),
        ("PUBLISH", "__sentinel__:hello", "x"),
    ],
)
def test_a_service_user_is_refused_admin_commands(
    servers: Servers, tmp_path: Path, command: tuple[str, ...]
) -> None:
    server = start(servers, tmp_path)
    server.client().set("kept", "1")
    with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
        service(server, "execution").execute_command(*command)
    assert server.client().get("kept") == b"1"
    assert server.client().config_get("maxmemory") == {"maxmemory": "0"}


def test_wrong_or_missing_passwords_are_refused(servers: Servers, tmp_path: Path) -> None:
    server = start(servers, tmp_path)
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=server.port).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=server.port, username="quantum-execution", password=ADMIN).ping()
    # The replica's and Sentinel's users can do nothing a service does.
    replica = login(server, redis_acl.REPLICA_USER, redis_acl.REPLICA_SECRET)
    assert replica.ping() is True
    with pytest.raises(redis.exceptions.NoPermissionError):
        replica.get("x")


def test_the_acl_file_holds_hashes_never_passwords() -> None:
    text = redis_acl.acl_file(PREFIX, SERVICES, PASSWORDS)
    assert not [value for value in PASSWORDS.values() if value in text]
    assert len(text.splitlines()) == 4 + len(SERVICES)


# What redis_exporter 1.45 sends a Redis at each scrape with seawall's flags
# (exporter.go scrapeRedisHost, latency.go, slowlog.go at v1.45.0), AUTH aside.
EXPORTER_SCRAPE = [
    ("CLIENT", "SETNAME", "redis_exporter"),
    ("CONFIG", "GET", "*"),
    ("INFO", "ALL"),
    ("LATENCY", "LATEST"),
    ("SLOWLOG", "LEN"),
    ("SLOWLOG", "GET", "1"),
]
# What it sends a Sentinel beside CLIENT SETNAME and INFO (sentinels.go).
EXPORTER_SENTINEL_SCRAPE = [
    ("SENTINEL", "MASTERS"),
    ("SENTINEL", "CKQUORUM", "seawall"),
    ("SENTINEL", "SENTINELS", "seawall"),
    ("SENTINEL", "SLAVES", "seawall"),
]


def exporter(server: RedisServer) -> redis.Redis:
    return login(server, redis_acl.EXPORTER_USER, redis_acl.EXPORTER_SECRET)


def test_the_exporter_user_runs_every_scrape_command_and_nothing_else(
    servers: Servers, tmp_path: Path
) -> None:
    server = start(servers, tmp_path)
    server.client().set("kept", "1")
    server.client().execute_command("SLOWLOG", "RESET")
    user = exporter(server)
    for command in EXPORTER_SCRAPE:
        user.execute_command(*command)
    # CONFIG GET * is whole (databases, maxmemory): not cut to what a user may see.
    config = user.config_get("*")
    assert config["databases"] == "16" and "maxmemory" in config
    # redis-py parses INFO into a dict.
    assert "redis_version" in user.execute_command("INFO", "ALL")
    names = {
        c["name"] for c in server.client().client_list(_type="normal") if c["user"] == "exporter"
    }
    assert names == {"redis_exporter"}
    for command in (
        ("CONFIG", "SET", "maxmemory", "1"),
        ("CONFIG", "RESETSTAT"),
        ("CONFIG", "REWRITE"),
        ("FLUSHALL",),
        ("GET", "kept"),
        ("SET", "kept", "2"),
        ("KEYS", "*"),
        ("SCAN", "0"),
        ("SELECT", "1"),
        ("ACL", "LIST"),
        ("ACL", "SETUSER", "exporter", "+@all"),
        ("SLOWLOG", "RESET"),
        ("LATENCY", "RESET"),
        ("CLIENT", "KILL", "TYPE", "normal"),
        ("CLIENT", "LIST"),
        ("PUBLISH", "__sentinel__:hello", "x"),
        ("REPLICAOF", "127.0.0.1", "1"),
        ("DEBUG", "SLEEP", "0"),
        ("SHUTDOWN", "NOSAVE"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
            user.execute_command(*command)
    assert server.client().get("kept") == b"1"
    assert server.client().config_get("maxmemory") == {"maxmemory": "0"}
    # The admin's password does not make a login as the exporter.
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=server.port, username="exporter", password=ADMIN).ping()


def start_replica(servers: Servers, tmp_path: Path, master: AclServer) -> AclServer:
    """A Redis replicating from ``master`` as the replica user."""
    return start(
        servers,
        tmp_path,
        "--replicaof",
        "127.0.0.1",
        str(master.port),
        "--masteruser",
        redis_acl.REPLICA_USER,
        "--masterauth",
        PASSWORDS[redis_acl.REPLICA_SECRET],
    )


def test_a_replica_replicates_as_the_replica_user(servers: Servers, tmp_path: Path) -> None:
    master = start(servers, tmp_path)
    replica = start_replica(servers, tmp_path, master)
    wait_for_link(master, 1)
    master.client().set("replicated", "yes")
    assert master.client().execute_command("WAIT", 1, 2000) == 1
    assert replica.client().get("replicated") == b"yes"
    clients = master.client().client_list(_type="replica")
    assert [c["user"] for c in clients] == [redis_acl.REPLICA_USER]


def test_the_runtime_client_logs_in_as_its_service_user(servers: Servers, tmp_path: Path) -> None:
    master = start(servers, tmp_path)
    replica = start_replica(servers, tmp_path, master)
    wait_for_link(master, 1)
    sentinel_dir = servers.directory / "sentinel"
    sentinel_dir.mkdir(parents=True)
    (sentinel_dir / "sentinel.conf").write_text(
        f"sentinel monitor seawall 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds seawall 86400000\n"
        f"sentinel auth-user seawall {redis_acl.SENTINEL_USER}\n"
        f"sentinel auth-pass seawall {PASSWORDS[redis_acl.SENTINEL_SECRET]}\n"
    )
    sentinel = RedisServer(sentinel_dir, sentinel_of=master.port)
    servers.started.append(sentinel)
    sentinel.start()
    settings = RedisSettings(
        sentinels=(("127.0.0.1", sentinel.port),),
        master_name="seawall",
        username=redis_acl.service_user(PREFIX, "execution"),
        password=PASSWORDS[redis_acl.service_secret("execution")],
        operation_deadline=2.0,
        socket_timeout=1.0,
    )
    client = MajorityClient(settings)
    publisher = EventPublisher(client, None, producer_id="execution-test")
    try:
        assert client.call(lambda conn: conn.ping()) is True
        users = {c["user"] for c in master.client().client_list(_type="normal")}
        assert "quantum-execution" in users
        result = publisher.publish("quantum:stream:order_created", {"n": 1}, event_id="a")
        assert result.status == "acked"
        assert master.client().xlen("quantum:stream:order_created") == 1
        assert replica.client().execute_command("ROLE")[0] == b"slave"
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.call(lambda conn: conn.get(redis_acl.key_prefix("ai-engine") + "x"))
    finally:
        publisher.close()
        client.close()


def sentinel_with_client_user(servers: Servers, master: RedisServer) -> RedisServer:
    """A Sentinel with an admin password whose client user is set as the deploy sets it:
    the ACL SETUSER line through redis-cli's stdin, then FLUSHCONFIG."""
    directory = servers.directory / f"sentinel-{len(servers.started)}"
    directory.mkdir(parents=True)
    (directory / "sentinel.conf").write_text(
        "requirepass sentinel-admin\n"
        f"sentinel monitor seawall 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds seawall 86400000\n"
        f"sentinel auth-user seawall {redis_acl.SENTINEL_USER}\n"
        f"sentinel auth-pass seawall {PASSWORDS[redis_acl.SENTINEL_SECRET]}\n"
    )

    class AdminSentinel(RedisServer):
        def client(self) -> redis.Redis:
            return redis.Redis(port=self.port, password="sentinel-admin", socket_timeout=2)

    sentinel = AdminSentinel(directory, sentinel_of=master.port)
    servers.started.append(sentinel)
    sentinel.start()
    # Both users, as the deploy's file holds them.
    lines = redis_acl.sentinel_setuser(
        PASSWORDS[redis_acl.SENTINEL_CLIENT_SECRET]
    ) + redis_acl.sentinel_exporter_setuser(PASSWORDS[redis_acl.EXPORTER_SECRET])
    command = ["redis-cli", "--no-auth-warning", "-p", str(sentinel.port)]
    env = {**os.environ, "REDISCLI_AUTH": "sentinel-admin"}
    applied = subprocess.run(command, input=lines, env=env, capture_output=True, text=True)
    assert applied.stdout.split() == ["OK", "OK"], applied
    flushed = subprocess.run(
        [*command, "SENTINEL", "FLUSHCONFIG"], env=env, capture_output=True, text=True
    )
    assert flushed.stdout.split() == ["OK"], flushed
    # Sentinel wrote the user into its own file: a restart keeps it.
    written = (directory / "sentinel.conf").read_text()
    assert f"user {redis_acl.SENTINEL_CLIENT_USER} " in written
    assert f"user {redis_acl.EXPORTER_USER} " in written
    return sentinel


def sentinel_client(sentinel: RedisServer) -> redis.Redis:
    return login(sentinel, redis_acl.SENTINEL_CLIENT_USER, redis_acl.SENTINEL_CLIENT_SECRET)


def test_the_sentinel_client_user_can_only_ask_for_the_master(
    servers: Servers, tmp_path: Path
) -> None:
    master = start(servers, tmp_path)
    sentinel = sentinel_with_client_user(servers, master)
    client = sentinel_client(sentinel)
    assert client.sentinel_get_master_addr_by_name("seawall") == (b"127.0.0.1", master.port)
    for command in (
        ("SENTINEL", "SET", "seawall", "quorum", "2"),
        ("SENTINEL", "FAILOVER", "seawall"),
        ("SENTINEL", "REMOVE", "seawall"),
        ("SENTINEL", "MONITOR", "evil", "127.0.0.1", "1", "1"),
        ("SENTINEL", "RESET", "*"),
        ("SENTINEL", "CONFIG", "SET", "resolve-hostnames", "yes"),
        ("SENTINEL", "FLUSHCONFIG"),
        ("SENTINEL", "SIMULATE-FAILURE", "CRASH-AFTER-ELECTION"),
        ("SENTINEL", "DEBUG"),
        ("ACL", "LIST"),
        ("SHUTDOWN",),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    # Still monitoring the same master with the same quorum.
    state = sentinel.client().sentinel_master("seawall")
    assert isinstance(state, dict) and state["quorum"] == 1
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=sentinel.port).sentinel_get_master_addr_by_name("seawall")


def test_the_exporter_user_reads_sentinel_and_changes_nothing(
    servers: Servers, tmp_path: Path
) -> None:
    master = start(servers, tmp_path)
    sentinel = sentinel_with_client_user(servers, master)
    user = exporter(sentinel)
    assert user.client_setname("redis_exporter") is True
    assert user.execute_command("INFO", "ALL")["sentinel_masters"] == 1
    for command in EXPORTER_SENTINEL_SCRAPE:
        user.execute_command(*command)
    for command in (
        ("SENTINEL", "SET", "seawall", "quorum", "2"),
        ("SENTINEL", "FAILOVER", "seawall"),
        ("SENTINEL", "RESET", "*"),
        ("SENTINEL", "REMOVE", "seawall"),
        ("SENTINEL", "CONFIG", "SET", "resolve-hostnames", "yes"),
        ("SENTINEL", "FLUSHCONFIG"),
        ("ACL", "LIST"),
        ("SHUTDOWN",),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.execute_command(*command)
    state = sentinel.client().sentinel_master("seawall")
    assert isinstance(state, dict) and state["quorum"] == 1


def test_services_find_the_master_through_the_client_user(servers: Servers, tmp_path: Path) -> None:
    master = start(servers, tmp_path)
    replica = start_replica(servers, tmp_path, master)
    wait_for_link(master, 1)
    sentinel = sentinel_with_client_user(servers, master)
    # The runtime's client (all the reference service uses).
    settings = RedisSettings(
        sentinels=(("127.0.0.1", sentinel.port),),
        master_name="seawall",
        username=redis_acl.service_user(PREFIX, "execution"),
        password=PASSWORDS[redis_acl.service_secret("execution")],
        sentinel_username=redis_acl.SENTINEL_CLIENT_USER,
        sentinel_password=PASSWORDS[redis_acl.SENTINEL_CLIENT_SECRET],
        operation_deadline=2.0,
        socket_timeout=1.0,
    )
    client = MajorityClient(settings)
    try:
        assert client.discover() == ("127.0.0.1", master.port)
        assert client.call(lambda conn: conn.set("svc:execution:x", "1")) is True
    finally:
        client.close()
    # redis-py's own Sentinel client asks SENTINEL MASTERS: allowed too.
    found = Sentinel(
        [("127.0.0.1", sentinel.port)],
        sentinel_kwargs={
            "username": redis_acl.SENTINEL_CLIENT_USER,
            "password": PASSWORDS[redis_acl.SENTINEL_CLIENT_SECRET],
        },
    )
    try:
        assert found.discover_master("seawall") == ("127.0.0.1", master.port)
        primary = found.master_for(
            "seawall",
            username=redis_acl.service_user(PREFIX, "execution"),
            password=PASSWORDS[redis_acl.service_secret("execution")],
        )
        assert primary.get("svc:execution:x") == b"1"
    finally:
        found.close()
    assert replica.client().execute_command("ROLE")[0] == b"slave"


def test_the_reference_service_passes_both_usernames_from_its_settings() -> None:
    raw = {
        "service": "execution",
        "port": 8002,
        "redis": {"username": "quantum-execution", "sentinel_username": "client"},
    }
    config = from_dict(raw, env={"SEAWALL_REDIS_PASSWORD": "p"})
    assert (config.redis_username, config.sentinel_username) == ("quantum-execution", "client")
    # Before the move to ACL users the settings name none: `default`, as before.
    plain = from_dict({"service": "execution", "port": 8002}, env={})
    assert (plain.redis_username, plain.sentinel_username) == (None, None)


def test_sentinel_fails_over_as_its_own_user(servers: Servers, tmp_path: Path) -> None:
    replication = (
        "--masteruser",
        redis_acl.REPLICA_USER,
        "--masterauth",
        PASSWORDS[redis_acl.REPLICA_SECRET],
    )
    master = start(servers, tmp_path, *replication)
    replica = start(servers, tmp_path, "--replicaof", "127.0.0.1", str(master.port), *replication)
    wait_for_link(master, 1)
    sentinel = sentinel_with_client_user(servers, master)
    deadline = time.monotonic() + 10

    # Sentinel finds the replica through INFO, as its own user, and promotes only a
    # replica it has read INFO from with its link up (else NOGOODSLAVE): wait for that.
    def promotable() -> bool:
        return any(
            r.get("master-link-status") == "ok" and not r.get("is_sdown")
            for r in sentinel.client().sentinel_slaves("seawall")
        )

    # Sentinel reads a replica's INFO every 10 s: up to one period after it appears.
    up_by = time.monotonic() + 30
    while not promotable():
        assert time.monotonic() < up_by, "Sentinel never saw the replica up"
        time.sleep(0.1)
    deadline = time.monotonic()
    # It logs in as `sentinel` only: nothing else it needs is missing from its rules.
    users = {c["user"] for c in master.client().client_list(_type="normal")}
    assert redis_acl.SENTINEL_USER in users
    assert sentinel.client().execute_command("SENTINEL", "FAILOVER", "seawall")
    client = sentinel_client(sentinel)
    while client.sentinel_get_master_addr_by_name("seawall") != (b"127.0.0.1", replica.port):
        assert time.monotonic() < deadline + 20, "no failover"
        time.sleep(0.1)
    # The promoted replica and the old master, reconfigured by Sentinel (REPLICAOF,
    # CONFIG REWRITE): the old master now replicates as `replica`.
    while replica.client().execute_command("ROLE")[0] != b"master":
        assert time.monotonic() < deadline + 20
        time.sleep(0.1)
    wait_for_link(replica, 1, timeout=30)
    assert master.client().execute_command("ROLE")[0] == b"slave"
    assert [c["user"] for c in replica.client().client_list(_type="replica")] == ["replica"]


class ConfiguredServer(AclServer):
    """An AclServer started from a configuration file (CONFIG REWRITE needs one)."""

    def __init__(self, directory: Path, config: Path) -> None:
        super().__init__(directory)
        self.config = config

    def _command(self) -> list[str]:
        binary, *options = super()._command()
        return [binary, str(self.config), *options]


def test_users_a_rewrite_left_in_redis_conf_are_dropped_before_redis_starts(
    servers: Servers, tmp_path: Path
) -> None:
    # Redis as the lab ran it before the ACL file: its CONFIG REWRITE (the deploy's
    # or Sentinel's at a failover) writes the default user into redis.conf.
    config = tmp_path / "redis.conf"
    config.write_text(f"requirepass {ADMIN}\n")
    legacy = ConfiguredServer(servers.directory / "legacy", config)
    servers.started.append(legacy)
    legacy.start()
    assert legacy.client().config_rewrite() == b"OK"
    legacy.stop()
    assert "\nuser default " in config.read_text()
    config.write_text(config.read_text() + f"aclfile {acl_file(tmp_path)}\n")
    # Redis refuses users in redis.conf beside an aclfile: it would not come back.
    with pytest.raises(RuntimeError, match="did not start"):
        legacy.start()
    # The drop-in's ExecStartPre, as systemd runs it before every start.
    context = {**REDIS, "redis_conf": str(config)}
    dropin = render("redis", "/etc/systemd/system/redis-server.service.d/seawall.conf", context)
    (pre,) = [line for line in dropin.splitlines() if line.startswith("ExecStartPre=")]
    command = pre.removeprefix("ExecStartPre=").removeprefix("+")
    subprocess.run(command, shell=True, check=True)
    assert "\nuser " not in config.read_text()
    legacy.start()
    assert service(legacy, "execution").ping() is True
