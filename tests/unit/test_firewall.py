"""The firewall of every lab host, as the kernel reads it, and its load and rollback.

Each host's rendered ruleset is loaded into a throwaway network namespace
(``unshare -n``: the controller's own ruleset is never touched), listed back as
JSON, and every port of the stack is probed from every lab host, the controller
(the admin source) and an outside address by walking the listed rules in order.
The result must equal the table below, written out by hand from who talks to
whom (seawall/components/*.py), not computed from the rules.
"""

import ipaddress
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from seawall import defaults, inventory, settings
from seawall.components import firewall
from seawall.facts.firewall import FirewallState
from seawall.operations import firewall as firewall_ops

OUTSIDE = "203.0.113.9"
DATA = {"data-1", "data-2", "data-3"}
PG = {"data-1", "data-2"}
APP = {"app-1", "app-2"}
GW = {"gw-1"}
OPS = {"ops-1"}
ADMIN = {"controller"}
HOSTS = DATA | APP | GW | OPS
EVERYONE = HOSTS | ADMIN | {"outside"}

# Who reaches which port key on each kind of lab host; any port not listed: nobody.
DATA_HOST = {
    "ssh": OPS | ADMIN,
    "redis_port": DATA | APP | OPS | ADMIN,
    "sentinel_port": DATA | APP | OPS | ADMIN,
    "etcd_client_port": DATA,
    "etcd_peer_port": DATA,
    "etcd_metrics_port": DATA | OPS | ADMIN,
    "node_exporter_port": OPS,
    "redis_exporter_port": OPS,
}
POSTGRES_HOST = DATA_HOST | {
    "postgres_port": PG | APP,
    "patroni_rest_port": PG | APP | OPS | ADMIN,
    "postgres_exporter_port": OPS,
}
EXPECTED: dict[str, dict[str, set[str]]] = {
    "data-1": POSTGRES_HOST,
    "data-2": POSTGRES_HOST,
    "data-3": DATA_HOST,
    **dict.fromkeys(
        ("app-1", "app-2"),
        {"ssh": OPS | ADMIN, "services": GW | OPS | ADMIN, "node_exporter_port": OPS},
    ),
    "gw-1": {
        "ssh": OPS | ADMIN,
        "gateway_http_port": EVERYONE,
        "gateway_https_port": EVERYONE,
        "gateway_internal_http_port": OPS | ADMIN,
        "node_exporter_port": OPS,
        "nginx_exporter_port": OPS,
        "mtail_port": OPS,
    },
    "ops-1": {
        # The Postgres hosts push WAL into the pgBackRest repository over SSH.
        "ssh": OPS | ADMIN | PG,
        "journal_remote_port": HOSTS,
        "node_exporter_port": OPS,
        "blackbox_exporter_port": OPS,
        "prometheus_port": OPS | ADMIN,
    },
}


def netns(script: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a shell script as root in a new, empty network namespace."""
    return subprocess.run(
        ["unshare", "-n", "sh", "-ec", script], capture_output=True, text=True, **kwargs
    )


def listed(ruleset: str, tmp_path: Path) -> dict[str, Any]:
    """Load ``ruleset`` into a fresh namespace and return the kernel's table as nft JSON."""
    path = tmp_path / "firewall.nft"
    path.write_text(ruleset)
    result = netns(f"nft -f {path}; nft -j list table inet seawall")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _address_in(value: Any, source: str) -> bool:
    address = ipaddress.ip_address(source)
    if isinstance(value, str):
        return address == ipaddress.ip_address(value)
    if "prefix" in value:
        prefix = value["prefix"]
        return address in ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}")
    if "range" in value:
        low, high = (int(ipaddress.ip_address(v)) for v in value["range"])
        return low <= int(address) <= high
    if "set" in value:
        return any(_address_in(item, source) for item in value["set"])
    raise AssertionError(f"unread address match {value!r}")


def _port_in(value: Any, port: int) -> bool:
    if isinstance(value, int):
        return value == port
    if "set" in value:
        return any(_port_in(item, port) for item in value["set"])
    if "range" in value:
        return value["range"][0] <= port <= value["range"][1]
    raise AssertionError(f"unread port match {value!r}")


def _matches(match: dict[str, Any], source: str, port: int) -> bool:
    """Whether one match holds for a new TCP connection from ``source`` (IPv4) to ``port``."""
    left, right = match["left"], match["right"]
    if "ct" in left:
        states = right if isinstance(right, list) else [right]
        return "new" in states
    if "meta" in left and left["meta"]["key"] == "iifname":
        return False  # the probe comes from the network, never from lo
    if "meta" in left and left["meta"]["key"] == "l4proto":
        return right == "tcp"
    payload = left.get("payload")
    if payload is None:
        raise AssertionError(f"unread match {match!r}")
    if payload["protocol"] in ("icmp", "icmpv6", "udp"):
        return False
    if payload["protocol"] == "tcp" and payload["field"] == "dport":
        return _port_in(right, port)
    if payload["protocol"] == "ip" and payload["field"] == "saddr":
        return _address_in(right, source)
    if payload["protocol"] == "ip6":
        return False
    raise AssertionError(f"unread match {match!r}")


def accepted(table: dict[str, Any], source: str, port: int) -> bool:
    """Walk the input chain as the kernel would for a new connection: first verdict wins."""
    items = table["nftables"]
    (chain,) = [i["chain"] for i in items if "chain" in i]
    assert (chain["hook"], chain["policy"]) == ("input", "drop")
    for rule in (i["rule"] for i in items if "rule" in i):
        exprs = rule["expr"]
        verdicts = [e for e in exprs if "accept" in e or "drop" in e]
        assert len(verdicts) == 1 and exprs[-1] is verdicts[0], rule
        if all(_matches(e["match"], source, port) for e in exprs if "match" in e):
            return "accept" in verdicts[0]
    return False


def sources(lab: inventory.Topology) -> dict[str, str]:
    out = {host.name: host.address for host in lab}
    out["controller"] = str(lab.value("lab_bridge_address"))
    out["outside"] = OUTSIDE
    return out


def key_ports(data: Any) -> dict[str, tuple[int, ...]]:
    """Every firewall key's ports on a host with ``data`` (every port of the stack)."""
    return {key: firewall.ports(key, data) for key in defaults.FIREWALL_SERVED_BY}


@pytest.fixture(scope="module")
def tables(lab: inventory.Topology, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = {}
    for host in lab:
        content, _ = firewall.ruleset(host.name, host.groups, host.data, list(lab))
        out[host.name] = listed(content, tmp_path_factory.mktemp(host.name))
    return out


def test_every_lab_host_is_reached_exactly_as_the_table_says(
    lab: inventory.Topology, tables: dict[str, Any]
) -> None:
    addresses = sources(lab)
    for host in lab:
        ports = key_ports(host.data)
        expected: dict[int, set[str]] = {port: set() for p in ports.values() for port in p}
        for key, who in EXPECTED[host.name].items():
            for port in ports[key]:
                expected[port] = set(who)
        measured = {
            port: {name for name, a in addresses.items() if accepted(tables[host.name], a, port)}
            for port in expected
        }
        assert measured == expected, host.name


def test_the_probe_covers_every_port_key(lab: inventory.Topology) -> None:
    # A new port key (another concern's) is probed too: the table names every key.
    assert set(defaults.PORT_KEYS) <= set(key_ports(lab.host("data-1").data))
    named = {key for table in EXPECTED.values() for key in table}
    assert named <= set(defaults.FIREWALL_SERVED_BY)


def test_the_walk_would_see_an_opened_port(lab: inventory.Topology, tmp_path: Path) -> None:
    # The reachability check itself: opening Redis to the gateway shows as reached.
    host = lab.host("data-1")
    rules = dict(settings.setting(host.data, "firewall_rules"))
    rules["redis_port"] = [*rules["redis_port"], "gateway"]
    data = {**host.data, "firewall_rules": rules}
    table = listed(firewall.ruleset(host.name, host.groups, data, list(lab))[0], tmp_path)
    gateway = lab.host("gw-1").address
    assert accepted(table, gateway, int(host.data["redis_port"]))
    assert not accepted(table, gateway, int(host.data["sentinel_port"]))


def test_an_admin_network_holding_a_host_is_one_element(
    lab: inventory.Topology, tmp_path: Path
) -> None:
    host = lab.host("app-1")
    data = {**host.data, "firewall_admin_sources": ["10.77.0.0/24", "fd00:77::/64"]}
    content, _ = firewall.ruleset(host.name, host.groups, data, list(lab))
    assert "tcp dport 22 ip saddr { 10.77.0.0/24 } accept" in content
    assert "tcp dport 22 ip6 saddr { fd00:77::/64 } accept" in content
    table = listed(content, tmp_path)
    assert accepted(table, "10.77.0.200", 22)
    assert not accepted(table, "10.78.0.1", 22)


def test_the_file_replaces_our_table_whole_and_leaves_others(
    lab: inventory.Topology, tmp_path: Path
) -> None:
    host = lab.host("gw-1")
    content, comment = firewall.ruleset(host.name, host.groups, host.data, list(lab))
    lines = [line for line in content.splitlines() if line and not line.startswith("#")]
    assert content.startswith(f"# {firewall.RULESET} - managed by seawall\n")
    assert lines[:2] == ["table inet seawall", "delete table inet seawall"]
    assert "flush" not in content
    old = tmp_path / "old.nft"
    old.write_text(
        "table inet seawall {\n chain stale {\n  tcp dport 6379 accept\n }\n}\n"
        "table ip other {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
        " }\n}\n"
    )
    new = tmp_path / "new.nft"
    new.write_text(content)
    result = netns(f"nft -f {old}; nft -f {new}; nft list ruleset")
    assert result.returncode == 0, result.stderr
    assert "table ip other" in result.stdout
    assert "stale" not in result.stdout
    assert f'comment "{comment}"' in result.stdout


def test_the_comment_names_the_content(lab: inventory.Topology) -> None:
    host = lab.host("data-1")
    members = list(lab)
    first = firewall.ruleset(host.name, host.groups, host.data, members)
    assert firewall.ruleset(host.name, host.groups, host.data, members) == first
    assert re.fullmatch(r"seawall [0-9a-f]{16}", first[1])
    data = {**host.data, "firewall_admin_sources": ["192.0.2.7"]}
    assert firewall.ruleset(host.name, host.groups, data, members)[1] != first[1]


def test_the_deploy_validator_refuses_a_broken_ruleset(
    lab: inventory.Topology, tmp_path: Path
) -> None:
    host = lab.host("data-1")
    content, _ = firewall.ruleset(host.name, host.groups, host.data, list(lab))
    good, bad = tmp_path / "good.nft", tmp_path / "bad.nft"
    good.write_text(content)
    bad.write_text(content.replace("tcp dport 6379", "tcp dport 6379 ip saddr { 10.77.0.300 }"))
    assert netns("nft -c -f " + str(good)).returncode == 0
    refused = netns("nft -c -f " + str(bad))
    assert refused.returncode != 0 and "10.77.0.300" in refused.stderr


def test_the_boot_unit_loads_the_file_before_the_network() -> None:
    text = firewall.unit()
    assert text.startswith(f"# {firewall.UNIT_PATH} - managed by seawall\n")
    assert f"ExecStart=/usr/sbin/nft -f {firewall.RULESET}\n" in text
    assert "Before=network-pre.target" in text and "DefaultDependencies=no" in text
    # Stopping it never opens the host or flushes anything.
    settings_lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [line for line in settings_lines if "ExecStop" in line or "flush" in line]


# --- the load and its rollback, run for real in a namespace ---------------------------


@pytest.fixture
def state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    monkeypatch.setattr(firewall_ops, "STATE_DIR", str(folder))
    monkeypatch.setattr(firewall_ops, "SAVED", str(folder / "rollback.nft"))
    return folder


class Host:
    """Answers FirewallState only; records the no-op."""

    name = "testhost"

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.noop_description: str | None = None

    def get_fact(self, fact: Any, **kwargs: Any) -> Any:
        assert fact is FirewallState and not kwargs
        return self.state

    def noop(self, description: str) -> None:
        self.noop_description = description


def commands(op: Any, state: dict[str, Any], **kwargs: Any) -> list[str]:
    from pyinfra.context import ctx_host

    with ctx_host.use(Host(state)):
        return [str(c) for c in op._inner(**kwargs)]


@dataclass
class Load:
    """The commands ruleset_loaded yields, split into what a namespace can run."""

    install: str
    save: str
    restore: str
    load: str


def load_commands(path: Path, boot: Path, comment: str) -> Load:
    got = commands(
        firewall_ops.ruleset_loaded,
        FirewallState.default(),
        path=str(path),
        comment=comment,
        rollback_seconds=60,
        boot_file=str(boot),
    )
    install, clear, save, arm, load = got
    assert clear.startswith("systemctl stop seawall-firewall-rollback.timer")
    assert arm.startswith("systemd-run --quiet --unit=seawall-firewall-rollback --on-active=60s ")
    # The timer's command, run here by hand instead of by systemd.
    restore = arm.split("/bin/sh -c ", 1)[1]
    return Load(install, save, f"sh -c {restore}", load)


def test_the_rollback_restores_the_table_and_boot_file_saved_before_the_load(
    lab: inventory.Topology, tmp_path: Path, state_dir: Path
) -> None:
    host = lab.host("data-1")
    old, old_comment = firewall.ruleset(host.name, host.groups, host.data, list(lab))
    data = {**host.data, "firewall_admin_sources": ["192.0.2.7"]}
    new, comment = firewall.ruleset(host.name, host.groups, data, list(lab))
    path, boot = tmp_path / "firewall.nft", tmp_path / "boot.nft"
    path.write_text(new)
    boot.write_text(new)
    (tmp_path / "old.nft").write_text(old)
    steps = load_commands(path, boot, comment)
    check_new = commands(firewall_ops.rollback_cancelled, {}, comment=comment, scheduled=True)[1]
    check_old = check_new.replace(comment, old_comment)
    result = netns(
        f"nft -f {tmp_path / 'old.nft'}\n{steps.install}\n{steps.save}\n{steps.load}\n"
        f"{check_new}\necho loaded-new\n{steps.restore}\n{check_old}\necho restored-old\n"
        f"nft -f {boot}\n{check_old}\necho boot-file-old"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["loaded-new", "restored-old", "boot-file-old"]
    # The cancel's check refuses once the old table is back.
    refused = netns(f"nft -f {tmp_path / 'old.nft'}\n{check_new}")
    assert refused.returncode == 1
    assert "did not confirm the new one in time" in refused.stderr


def test_a_rollback_with_no_table_before_removes_ours_only(
    lab: inventory.Topology, tmp_path: Path, state_dir: Path
) -> None:
    host = lab.host("gw-1")
    new, comment = firewall.ruleset(host.name, host.groups, host.data, list(lab))
    path = tmp_path / "firewall.nft"
    path.write_text(new)
    steps = load_commands(path, tmp_path / "boot.nft", comment)
    other = "add table ip other"
    result = netns(
        f"nft '{other}'\n{steps.install}\n{steps.save}\n{steps.load}\n"
        f"{steps.restore}\nnft list tables"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["table", "ip", "other"]


# --- the deploy's plan on a fake host -----------------------------------------------


@dataclass
class Call:
    op: str
    kwargs: dict[str, Any]
    will_change: bool = False

    def did_change(self) -> bool:
        return self.will_change


class FakeHost:
    def __init__(
        self, name: str, groups: tuple[str, ...], data: Any, state: Any, packages: dict
    ) -> None:
        self.name, self.groups, self.data, self.state = name, groups, data, state
        self.packages = packages

    def get_fact(self, fact: Any, **kwargs: Any) -> Any:
        from seawall.facts.deb import DebInstallState

        if fact is FirewallState:
            return self.state
        if fact is DebInstallState:
            installed = {name: versions[0] for name, versions in self.packages.items()}
            return {"installed": installed, "policy_rc_d": None}
        raise AssertionError(f"unexpected fact {fact.__name__} {kwargs}")


def plan(
    monkeypatch: pytest.MonkeyPatch,
    lab: inventory.Topology,
    name: str,
    load_changes: bool,
    pending: bool = False,
    packages: dict | None = None,
) -> list[Call]:
    from seawall.components import common

    member = lab.host(name)
    state = {"table": True, "comment": "seawall old", "rollback_pending": pending}
    installed = {"nftables": ["1.0.6"]} if packages is None else packages
    fake = FakeHost(name, member.groups, member.data, state, installed)
    calls: list[Call] = []

    def recorder(op: str, will_change: bool = False) -> Any:
        def record(*args: Any, **kwargs: Any) -> Call:
            call = Call(op, kwargs, will_change)
            calls.append(call)
            return call

        return record

    class Module:
        def __init__(self, module: str) -> None:
            self.module = module

        def __getattr__(self, op: str) -> Any:
            return recorder(f"{self.module}.{op}")

    for target in (common, firewall):
        monkeypatch.setattr(target, "host", fake)
        for module in ("apt", "files", "server", "systemd", "python"):
            monkeypatch.setattr(target, module, Module(module), raising=False)
    monkeypatch.setattr(firewall, "inventory", list(lab))
    monkeypatch.setattr(firewall, "validated_file", recorder("validated_file"))
    monkeypatch.setattr(firewall, "ruleset_loaded", recorder("ruleset_loaded", load_changes))
    monkeypatch.setattr(firewall, "rollback_cancelled", recorder("rollback_cancelled"))
    firewall.deploy_firewall._inner()
    return calls


def ops(calls: list[Call]) -> list[str]:
    return [call.op for call in calls]


def test_a_changed_ruleset_is_checked_loaded_probed_then_kept(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    calls = plan(monkeypatch, lab, "data-1", load_changes=True)
    # nftables is installed: apt is not asked (install_packages).
    assert ops(calls) == [
        "files.directory",
        "validated_file",
        "files.put",
        "systemd.daemon_reload",
        "systemd.service",
        "ruleset_loaded",
        "python.call",
        "rollback_cancelled",
    ]
    by_op = {call.op: call for call in calls}
    member = lab.host("data-1")
    content, comment = firewall.ruleset("data-1", member.groups, member.data, list(lab))
    checked = by_op["validated_file"].kwargs
    assert (checked["dest"], checked["validate"], checked["src"]) == (
        firewall.RULESET,
        "nft -c -f {path}",
        content,
    )
    boot = by_op["systemd.service"].kwargs
    assert (boot["service"], boot["enabled"], boot["running"]) == (firewall.UNIT, True, None)
    loaded = by_op["ruleset_loaded"].kwargs
    assert (loaded["path"], loaded["comment"], loaded["rollback_seconds"]) == (
        firewall.RULESET,
        comment,
        defaults.FIREWALL["firewall_rollback_seconds"],
    )
    probe = by_op["python.call"].kwargs
    assert probe["function"] is firewall.ssh_answers
    assert (probe["address"], probe["port"]) == (member.data["ssh_hostname"], 22)
    assert by_op["rollback_cancelled"].kwargs["scheduled"] is True
    assert by_op["rollback_cancelled"].kwargs["comment"] == comment


def test_a_host_without_nftables_installs_it_first(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    calls = plan(monkeypatch, lab, "data-1", load_changes=True, packages={})
    (install,) = [c for c in calls if c.op == "apt.packages"]
    assert install.kwargs["packages"] == ["nftables"]
    assert ops(calls).index("apt.packages") < ops(calls).index("validated_file")


def test_an_unchanged_ruleset_is_not_probed(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    calls = plan(monkeypatch, lab, "gw-1", load_changes=False)
    assert "python.call" not in ops(calls)
    (cancel,) = [c for c in calls if c.op == "rollback_cancelled"]
    assert cancel.kwargs["scheduled"] is False


def test_a_rollback_left_pending_is_probed_before_it_is_cancelled(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    calls = plan(monkeypatch, lab, "gw-1", load_changes=False, pending=True)
    assert ops(calls)[-2:] == ["python.call", "rollback_cancelled"]


# --- the probe itself, against real listeners on loopback ---------------------------


@pytest.fixture
def listener() -> Iterator[tuple[Any, int]]:
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    yield server, server.getsockname()[1]
    server.close()


def _answer(server: Any, text: bytes) -> None:
    import threading

    def serve() -> None:
        connection, _ = server.accept()
        connection.sendall(text)
        connection.close()

    threading.Thread(target=serve, daemon=True).start()


def test_the_probe_accepts_an_sshd_banner(listener: tuple[Any, int]) -> None:
    server, port = listener
    _answer(server, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    firewall.ssh_answers("127.0.0.1", port, timeout=5)


def test_the_probe_fails_on_something_else(listener: tuple[Any, int]) -> None:
    from pyinfra.api.exceptions import DeployError

    server, port = listener
    _answer(server, b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(DeployError, match="not as sshd"):
        firewall.ssh_answers("127.0.0.1", port, timeout=5)


def test_the_probe_fails_when_nothing_answers(listener: tuple[Any, int]) -> None:
    from pyinfra.api.exceptions import DeployError

    server, port = listener
    server.close()
    with pytest.raises(DeployError, match="rollback restores the previous table"):
        firewall.ssh_answers("127.0.0.1", port, timeout=2)
