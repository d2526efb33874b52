"""Redis and Sentinel ACL users on the lab (issue 14, item 2), tried from app-1 with the
lab's real generated passwords: a service reaches its own keys only, no service runs an
admin command, Sentinel's client user can only ask where the master is, the redis
exporter logs in as its own user, and nobody gets in without a password.

A lab deployed before the ACL users runs Redis without the ACL file until each Redis
restarts (``aclfile`` is read at start): the module's fixture runs the rolling restart
and a second deploy then, the order ``seawall/components/redis.py`` describes.
"""

import hashlib
import shlex
import time
from typing import Any

import pytest

from seawall import redis_acl, secrets
from seawall.components import metrics
from seawall.components.redis import USERS_ACL
from seawall.inventory import Topology
from seawall.redis.client import redis_settings
from seawall.redis.failover import wait_healthy
from seawall.restart import rolling_restart
from seawall.runtime.reconnect import MajorityClient, connect
from seawall.settings import setting
from seawall.ssh import run as ssh
from tests.lab.conftest import changed_operations, remote_python, run_site_deploy

APP_HOST = "app-1"
OWNER, OTHER = "execution", "ai-engine"

# Run on the app host: attempts arrive as one JSON line on stdin (passwords
# included); one JSON line out, each attempt's reply or error, never a password.
_PROBE = """
import json, sys
import redis
results = []
for a in json.loads(sys.stdin.readline()):
    conn = redis.Redis(host=a["host"], port=a["port"], username=a["user"],
                       password=a["password"], socket_timeout=5, decode_responses=True)
    try:
        reply = conn.execute_command(*a["command"])
        if not isinstance(reply, (str, int, list)):
            reply = str(reply)
        results.append({"ok": True, "reply": reply})
    except redis.exceptions.RedisError as error:
        results.append({"ok": False, "reply": " ".join(str(error).split())[:200]})
    finally:
        conn.close()
print(json.dumps(results))
"""


def _secret(topology: Topology, name: str) -> str:
    host = topology.host(APP_HOST)
    return secrets.require([name], setting(host.data, "secrets_file"), host.name)[name]


def _secret_of(topology: Topology, name: str) -> str:
    """A secret of the ``redis`` hosts (app hosts hold no exporter's)."""
    host = topology.group("redis")[0]
    return secrets.require([name], setting(host.data, "secrets_file"), host.name)[name]


def _acl_files(topology: Topology) -> dict[str, str]:
    password = redis_settings(topology).password
    loaded: dict[str, str] = {}
    for host in topology.group("redis"):
        conn = connect(host.address, int(host.data["redis_port"]), password, 2)
        try:
            loaded[host.name] = str(conn.config_get("aclfile")["aclfile"])
        finally:
            conn.close()
    return loaded


@pytest.fixture(scope="module")
def acl_lab(deployed_lab: Topology) -> Topology:
    """The lab with every Redis running its ACL file and a deploy after that."""
    assert wait_healthy(deployed_lab, 180).ok
    if set(_acl_files(deployed_lab).values()) != {USERS_ACL}:
        report = rolling_restart(deployed_lab, dry_run=False, log=print)
        assert report.ok, report
        result = run_site_deploy()
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert set(_acl_files(deployed_lab).values()) == {USERS_ACL}
    return deployed_lab


def _master(topology: Topology) -> tuple[str, int]:
    client = MajorityClient(redis_settings(topology))
    try:
        return client.discover()
    finally:
        client.close()


def _probe(topology: Topology, attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = remote_python(topology, APP_HOST, _PROBE, attempts, timeout=120)
    assert len(out) == len(attempts)
    return list(out)


def _as_service(topology: Topology, service: str, *command: str) -> dict[str, Any]:
    host, port = _master(topology)
    prefix = str(setting(topology.host(APP_HOST).data, "services_unit_prefix"))
    return {
        "host": host,
        "port": port,
        "user": redis_acl.service_user(prefix, service),
        "password": _secret(topology, redis_acl.service_secret(service)),
        "command": list(command),
    }


def _sentinels(
    topology: Topology, user: str | None, password: str | None, *command: str
) -> list[dict[str, Any]]:
    return [
        {
            "host": sentinel.address,
            "port": int(sentinel.data["sentinel_port"]),
            "user": user,
            "password": password,
            "command": list(command),
        }
        for sentinel in topology.group("sentinel")
    ]


def test_a_service_reaches_its_own_keys_and_is_refused_another_services(
    acl_lab: Topology,
) -> None:
    own = redis_acl.key_prefix(OWNER) + "acl-test"
    theirs = redis_acl.key_prefix(OTHER) + "acl-test"
    results = _probe(
        acl_lab,
        [
            _as_service(acl_lab, OWNER, "SET", own, "1"),
            _as_service(acl_lab, OTHER, "SET", theirs, "1"),
            _as_service(acl_lab, OWNER, "GET", theirs),
            _as_service(acl_lab, OWNER, "SET", theirs, "overwritten"),
            _as_service(acl_lab, OTHER, "GET", theirs),
        ],
    )
    # redis-py turns SET's OK into True.
    assert results[0] == {"ok": True, "reply": True} and results[1] == results[0]
    for refused in results[2:4]:
        assert not refused["ok"] and "no permissions" in refused["reply"], refused
    assert results[4] == {"ok": True, "reply": "1"}


@pytest.mark.parametrize(
    "command",
    [
        ("CONFIG", "SET", "maxmemory", "1"),
        ("FLUSHALL",),
        ("REPLICAOF", "127.0.0.1", "1"),
        ("ACL", "SETUSER", "intruder", "on", "nopass", "+@all"),
        ("SHUTDOWN", "NOSAVE"),
    ],
)
def test_a_service_user_is_refused_admin_commands(
    acl_lab: Topology, command: tuple[str, ...]
) -> None:
    (result,) = _probe(acl_lab, [_as_service(acl_lab, OWNER, *command)])
    assert not result["ok"] and "no permissions" in result["reply"], result


def test_the_sentinel_client_user_may_only_ask_for_the_master(acl_lab: Topology) -> None:
    user, password = (
        redis_acl.SENTINEL_CLIENT_USER,
        _secret(acl_lab, redis_acl.SENTINEL_CLIENT_SECRET),
    )
    master = _master(acl_lab)
    name = str(setting(acl_lab.host(APP_HOST).data, "sentinel_master_name"))
    asked = _probe(
        acl_lab, _sentinels(acl_lab, user, password, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
    )
    assert [tuple(r["reply"]) for r in asked] == [(master[0], str(master[1]))] * len(asked)
    for command in (
        ("SENTINEL", "SET", name, "quorum", "1"),
        ("SENTINEL", "FAILOVER", name),
        ("SENTINEL", "REMOVE", name),
        ("SENTINEL", "MONITOR", "intruder", "10.77.0.99", "6379", "1"),
    ):
        for result in _probe(acl_lab, _sentinels(acl_lab, user, password, *command)):
            assert not result["ok"] and "no permissions" in result["reply"], (command, result)
    # Nothing moved: same master, and each Sentinel keeps its quorum.
    assert _master(acl_lab) == master
    assert wait_healthy(acl_lab, 30).ok


def test_unauthenticated_and_wrong_password_attempts_fail(acl_lab: Topology) -> None:
    host, port = _master(acl_lab)
    redis_attempts = [
        {"host": host, "port": port, "user": None, "password": None, "command": ["PING"]},
        {"host": host, "port": port, "user": None, "password": "wrong", "command": ["PING"]},
        {**_as_service(acl_lab, OWNER, "PING"), "password": "wrong"},
    ]
    sentinel_attempts = _sentinels(acl_lab, None, None, "SENTINEL", "MASTERS")
    sentinel_attempts += _sentinels(acl_lab, redis_acl.SENTINEL_CLIENT_USER, "wrong", "PING")
    for result in _probe(acl_lab, redis_attempts + sentinel_attempts):
        assert not result["ok"], result
        # redis-py words NOAUTH as "Authentication required."
        words = ("NOAUTH", "WRONGPASS", "invalid", "Authentication required")
        assert any(word in result["reply"] for word in words), result


def test_replicas_sentinels_and_services_log_in_as_their_own_users(acl_lab: Topology) -> None:
    host, port = _master(acl_lab)
    password = redis_settings(acl_lab).password
    replicas = [h for h in acl_lab.group("redis") if h.address != host]
    # Set live by CONFIG SET, so a replication link made before keeps its login
    # (components/redis.py, step 3): cut one replica's link, and its new one must
    # log in as the replica user.
    cut = replicas[0]
    for replica in replicas:
        conn = connect(replica.address, int(replica.data["redis_port"]), password, 2)
        try:
            assert conn.config_get("masteruser")["masteruser"] == redis_acl.REPLICA_USER
            if replica is cut:
                conn.client_kill_filter(_type="master")
        finally:
            conn.close()
    prefix = str(setting(acl_lab.host(APP_HOST).data, "services_unit_prefix"))
    service = redis_acl.service_user(prefix, OWNER)
    conn = connect(host, port, password, 2)
    try:
        # A service's health probe is on the master within one health check (3 s)
        # of a failover the earlier tests may have made.
        deadline = time.monotonic() + 30
        links: dict[str, str] = {}
        users: set[str] = set()
        while time.monotonic() < deadline:
            links = {
                c["addr"].rsplit(":", 1)[0]: c["user"] for c in conn.client_list(_type="replica")
            }
            users = {c["user"] for c in conn.client_list(_type="normal")}
            if links.get(cut.address) == redis_acl.REPLICA_USER and service in users:
                break
            time.sleep(0.5)
    finally:
        conn.close()
    assert links.get(cut.address) == redis_acl.REPLICA_USER, links
    assert redis_acl.SENTINEL_USER in users
    assert service in users, users


def test_a_second_deploy_changes_no_acl_user(acl_lab: Topology) -> None:
    changed = changed_operations(run_site_deploy("--json"))
    touched = [name for name in changed if "ACL" in name or "Sentinel" in name]
    assert touched == [], touched


# Run on the ops host (the firewall admits only it to the exporters): each URL's
# redis_up value, one a line ("none" if the page has none).
_REDIS_UP = """
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for url in sys.argv[1:]:
    body = opener.open(url, timeout=30).read().decode()
    up = [line.split()[1] for line in body.splitlines() if line.startswith("redis_up ")]
    print(up[0] if up else "none")
"""


def _redis_up(topology: Topology, urls: list[str]) -> list[str]:
    """redis_up of each exporter page: the exporter logs in afresh at every scrape."""
    ops = topology.group("ops")[0]
    args = " ".join(shlex.quote(url) for url in urls)
    out = ssh(topology, ops.name, f"python3 -c {shlex.quote(_REDIS_UP)} {args}", check=True)
    return out.stdout.split()


def _exporter_urls(topology: Topology, host: Any) -> list[str]:
    """The exporter's own Redis page and, on a Sentinel host, its Sentinel's (as Prometheus
    asks)."""
    base = f"http://{host.address}:{setting(host.data, 'redis_exporter_port')}"
    urls = [f"{base}/metrics"]
    if "sentinel" in host.groups:
        target = metrics.redis_uri(host.address, int(setting(host.data, "sentinel_port")))
        urls.append(f"{base}/scrape?target={target}")
    return urls


def _set_exporter(conn: Any, state: str) -> None:
    assert conn.execute_command("ACL", "SETUSER", redis_acl.EXPORTER_USER, state) in (b"OK", "OK")


def test_the_redis_exporter_logs_in_as_its_own_user(acl_lab: Topology) -> None:
    settings = redis_settings(acl_lab)
    exporter_secret = _secret_of(acl_lab, redis_acl.EXPORTER_SECRET)
    for host in acl_lab.group("redis"):
        urls = _exporter_urls(acl_lab, host)
        assert _redis_up(acl_lab, urls) == ["1"] * len(urls), host.name
        # Its map holds the exporter's secret for every target and nothing else
        # (compared as SHA-256 on the controller: the secret never travels), and
        # its environment names the user.
        want = metrics.redis_passwords(
            host.data, list(host.groups), {redis_acl.EXPORTER_SECRET: exporter_secret}, True
        )
        pid = ssh(
            acl_lab, host.name, f"systemctl show -p MainPID --value {metrics.REDIS}", check=True
        ).stdout.strip()
        seen = ssh(
            acl_lab,
            host.name,
            f"sha256sum < {metrics.redis_secret_file(host.data)}; "
            f"tr '\\0' '\\n' < /proc/{pid}/environ",
            check=True,
        ).stdout.splitlines()
        assert seen[0].split()[0] == hashlib.sha256(want.encode()).hexdigest(), host.name
        assert f"REDIS_USER={redis_acl.EXPORTER_USER}" in seen, host.name
        # The proof it is that user: switched off on this Redis (and on its Sentinel),
        # the exporter no longer gets in; back on, it does. A few seconds of
        # redis_up 0, under the InstanceDown alert's minute.
        servers = [connect(host.address, int(host.data["redis_port"]), settings.password, 2)]
        if "sentinel" in host.groups:
            port = int(host.data["sentinel_port"])
            servers.append(connect(host.address, port, settings.sentinel_password, 2))
        try:
            for conn in servers:
                _set_exporter(conn, "off")
            assert _redis_up(acl_lab, urls) == ["0"] * len(urls), host.name
        finally:
            for conn in servers:
                _set_exporter(conn, "on")
                conn.close()
        assert _redis_up(acl_lab, urls) == ["1"] * len(urls), host.name
