"""etcd over TLS: its templates, the move of a running cluster, and the deploys' plans.

The plans are what ``deploy_etcd`` and ``deploy_postgres`` call, in order, on
fake hosts (operations recorded, not run; every fact a host is asked must be
one the test gave it): certificates before any configuration, Patroni paused
before any member moves to TLS, each Patroni restarted paused and the cluster
resumed last; a new cluster starts on TLS with no move at all, and a redeploy
with everything in place plans nothing that changes a running daemon. The
operations themselves are checked against fixtures (tests/operations/etcd.*,
patroni.*), the facts too (tests/facts/etcd.*, patroni.*).
"""

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api.exceptions import DeployError

from seawall import defaults, inventory, names, schema
from seawall.components import etcd, postgres
from seawall.components.templates import render
from seawall.operations import tls
from tests.unit import test_deploy_phases
from tests.unit.test_common_templates import Call, Recorder, one_call, ops_of
from tests.unit.test_logging_tls import make_lab, run

REPO = Path(__file__).resolve().parents[2]

# --- templates ------------------------------------------------------------------------


def _member_context(lab: inventory.Topology, name: str) -> dict[str, Any]:
    members = [(one.name, one.address) for one in lab.group("etcd")]
    return etcd.etcd_context(name, lab.host(name).data, members)


def _env(text: str) -> dict[str, str]:
    """The variables a defaults file gives etcd, as systemd's EnvironmentFile= reads them."""
    found = {}
    for line in text.splitlines():
        if line.startswith("ETCD_"):
            key, _, value = line.partition("=")
            found[key] = value.strip('"')
    return found


def test_peer_and_client_ports_take_https_with_client_certificates_only(
    lab: inventory.Topology,
) -> None:
    env = _env(render("etcd", etcd.DEFAULTS_FILE, _member_context(lab, "data-2")))
    tls_dir = "/etc/seawall/etcd-tls"
    assert env["ETCD_LISTEN_PEER_URLS"] == "https://10.77.0.12:2380"
    assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == "https://10.77.0.12:2380"
    assert env["ETCD_LISTEN_CLIENT_URLS"] == "https://10.77.0.12:2379,https://127.0.0.1:2379"
    assert env["ETCD_ADVERTISE_CLIENT_URLS"] == "https://10.77.0.12:2379"
    assert env["ETCD_INITIAL_CLUSTER"] == ",".join(
        f"{one.name}=https://{one.address}:2380" for one in lab.group("etcd")
    )
    for side in ("", "PEER_"):
        assert env[f"ETCD_{side}CERT_FILE"] == f"{tls_dir}/host.pem"
        assert env[f"ETCD_{side}KEY_FILE"] == f"{tls_dir}/host.key"
        assert env[f"ETCD_{side}TRUSTED_CA_FILE"] == f"{tls_dir}/ca.pem"
        assert env[f"ETCD_{side}CLIENT_CERT_AUTH"] == "true"
    # /metrics and /health alone stay plain, on their own port and the private address.
    assert env["ETCD_LISTEN_METRICS_URLS"] == "http://10.77.0.12:2381"
    # No URL on plain HTTP but the metrics listener: nothing else answers without TLS.
    plain = {key for key, value in env.items() if "http://" in value}
    assert plain == {"ETCD_LISTEN_METRICS_URLS"}


# etcd 3.4's own flags (etcdmain/config.go of 3.4; Debian 12's etcd-server 3.4.23
# `etcd --help`): every ETCD_* the file sets must be one of them, or etcd
# refuses to start ("unrecognized environment variable").
ETCD_34_FLAGS = {
    "name", "data-dir", "listen-peer-urls", "listen-client-urls", "listen-metrics-urls",
    "initial-advertise-peer-urls", "advertise-client-urls", "initial-cluster",
    "initial-cluster-state", "initial-cluster-token", "heartbeat-interval",
    "election-timeout", "auto-compaction-mode", "auto-compaction-retention",
    "cert-file", "key-file", "trusted-ca-file", "client-cert-auth",
    "peer-cert-file", "peer-key-file", "peer-trusted-ca-file", "peer-client-cert-auth",
}  # fmt: skip


def test_every_variable_is_an_etcd_34_flag(lab: inventory.Topology) -> None:
    env = _env(render("etcd", etcd.DEFAULTS_FILE, _member_context(lab, "data-1")))
    flags = {key.removeprefix("ETCD_").lower().replace("_", "-") for key in env}
    assert flags <= ETCD_34_FLAGS, flags - ETCD_34_FLAGS


def test_etcd_and_patroni_read_the_key_through_their_group(lab: inventory.Topology) -> None:
    context = _member_context(lab, "data-1")
    etcd_dropin = render("etcd", etcd.UNIT_DROPIN, context).splitlines()
    assert "SupplementaryGroups=seawall-etcd-tls" in etcd_dropin
    assert etcd_dropin.index("SupplementaryGroups=seawall-etcd-tls") > etcd_dropin.index(
        "[Service]"
    )
    patroni = render("postgres", postgres.UNIT_DROPIN, _patroni_context(lab, "data-2"))
    assert "SupplementaryGroups=seawall-etcd-tls" in patroni.splitlines()


def _patroni_context(lab: inventory.Topology, name: str) -> dict[str, Any]:
    return postgres.patroni_context(
        name,
        lab.host(name).data,
        etcd_members=[one.address for one in lab.group("etcd")],
        postgres_peers=[one.address for one in lab.group("postgres")],
        clients=[one.address for one in lab.group("app")],
        passwords={secret: "x" for secret in postgres.SECRET_NAMES},
    )


def test_patroni_reaches_etcd_over_https_with_its_certificate(lab: inventory.Topology) -> None:
    text = render("postgres", postgres.PATRONI_TEMPLATE, _patroni_context(lab, "data-2"))
    section = yaml.safe_load(text)["etcd3"]
    assert section == {
        "protocol": "https",
        "cacert": "/etc/seawall/etcd-tls/ca.pem",
        "cert": "/etc/seawall/etcd-tls/host.pem",
        "key": "/etc/seawall/etcd-tls/host.key",
        "hosts": ["10.77.0.11:2379", "10.77.0.12:2379", "10.77.0.13:2379"],
    }
    # The PatroniStore fact's test (grep, on the host) finds it in the file...
    assert re.search(r"^  protocol: https$", text, re.MULTILINE)


# /etc/default/etcd as the deploy wrote it before TLS (the lab's and production's).
PLAIN_DEFAULTS = """\
ETCD_NAME="data-2"
ETCD_DATA_DIR="/var/lib/etcd/seawall"
ETCD_LISTEN_PEER_URLS="http://10.77.0.12:2380"
ETCD_LISTEN_CLIENT_URLS="http://10.77.0.12:2379,http://127.0.0.1:2379"
ETCD_INITIAL_ADVERTISE_PEER_URLS="http://10.77.0.12:2380"
ETCD_ADVERTISE_CLIENT_URLS="http://10.77.0.12:2379"
ETCD_INITIAL_CLUSTER="data-1=http://10.77.0.11:2380,data-2=http://10.77.0.12:2380"
"""


def _grep(pattern: str, text: str) -> bool:
    """``pattern`` as FindInFile runs it on the host (``grep -e``, basic regex)."""
    found = subprocess.run(["grep", "-e", pattern], input=text, capture_output=True, text=True)
    return found.returncode == 0


def test_a_plain_defaults_file_is_told_from_a_tls_one(lab: inventory.Topology) -> None:
    assert _grep(etcd.PLAIN_PATTERN, PLAIN_DEFAULTS)
    for line in PLAIN_DEFAULTS.splitlines()[2:6]:
        assert _grep(etcd.PLAIN_PATTERN, line), line
    tls_file = render("etcd", etcd.DEFAULTS_FILE, _member_context(lab, "data-2"))
    # The metrics listener is plain on purpose: it is no reason to move again.
    assert not _grep(etcd.PLAIN_PATTERN, tls_file)


def test_the_old_patroni_file_reads_as_a_plain_store() -> None:
    old = "etcd3:\n  hosts:\n  - 10.77.0.11:2379\n"
    assert not re.search(r"^  protocol: https$", old, re.MULTILINE)


# --- defaults, schema, firewall ---------------------------------------------------------


def test_the_metrics_port_is_a_port_key_open_to_members_ops_and_admins() -> None:
    assert defaults.ETCD["etcd_metrics_port"] == 2381
    assert "etcd_metrics_port" in defaults.PORT_KEYS
    assert defaults.FIREWALL_SERVED_BY["etcd_metrics_port"] == ("etcd",)
    rules = defaults.FIREWALL["firewall_rules"]
    assert rules["etcd_metrics_port"] == ["etcd", "ops", "admin"]
    # Nobody but members and Patroni reaches the client port any more.
    assert rules["etcd_client_port"] == ["etcd", "postgres"]
    assert "etcd_metrics_port" in schema.SHARED_KEYS and "etcd_ca_dir" in schema.SHARED_KEYS


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("etcd_metrics_port", 0),
        ("etcd_tls_days", 30),
        ("etcd_tls_renew_days", 400),
        ("etcd_ca_days", 365),
        ("etcd_tls_group", "Etcd TLS"),
        ("etcd_ca_dir", "etc/seawall"),
    ],
)
def test_bad_etcd_tls_values_are_refused(key: str, value: Any) -> None:
    data = {**defaults.all_defaults(), key: value}
    assert key in {problem_key for problem_key, _ in schema.key_problems(data)}


def test_etcd_defaults_pass_the_schema() -> None:
    problems = dict(schema.key_problems(defaults.all_defaults()))
    assert not {key: message for key, message in problems.items() if key in defaults.ETCD}


def test_etcdctl_carries_the_hosts_client_certificate(lab: inventory.Topology) -> None:
    data = lab.host("data-3").data
    assert names.etcdctl(data) == (
        "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 "
        "--cacert=/etc/seawall/etcd-tls/ca.pem --cert=/etc/seawall/etcd-tls/host.pem "
        "--key=/etc/seawall/etcd-tls/host.key"
    )


# --- the certificates, made for real (this machine's OpenSSL) -----------------------------


def test_a_member_certificate_names_its_address_and_loopback_for_both_uses(
    tmp_path: Path,
) -> None:
    lab = make_lab(tmp_path)
    ops, app = lab["hosts"]["ops-1"], lab["hosts"]["app-1"]
    ca, member = str(ops.root / "ca"), str(app.root / "tls")
    run(lab, "ops-1", tls.tls_ca, directory=ca, common_name="etcd CA", days=3650)
    run(lab, "app-1", tls.tls_key, directory=member, common_name="app-1", group=lab["group"])
    signed = {
        "directory": ca,
        "peers": [("app-1", f"{member}/host.csr", "10.77.0.21")],
        "days": 397,
        "renew_days": 30,
        "extra_addresses": [etcd.LOOPBACK],
    }
    assert run(lab, "ops-1", tls.tls_signed, **signed)
    run(lab, "app-1", tls.tls_certificate, directory=member, ca_host="ops-1", ca_directory=ca,
        renew_days=30)  # fmt: skip
    text = subprocess.run(
        [
            "openssl",
            "x509",
            "-in",
            f"{member}/host.pem",
            "-noout",
            "-ext",
            "subjectAltName",
            "-purpose",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:app-1, IP Address:10.77.0.21, IP Address:127.0.0.1" in text
    assert "SSL client : Yes" in text and "SSL server : Yes" in text
    # Signed with loopback, it is current: a second pass signs nothing.
    assert run(lab, "ops-1", tls.tls_signed, **signed) == []


# --- the decisions -----------------------------------------------------------------------


def test_which_member_moves_to_tls() -> None:
    # A member with data whose file or peer URL is still plain moves.
    assert etcd.needs_switch(has_data=True, plain_file=True, plain_membership=False)
    assert etcd.needs_switch(has_data=True, plain_file=False, plain_membership=True)
    # On TLS already: nothing to move.
    assert not etcd.needs_switch(has_data=True, plain_file=False, plain_membership=False)
    # No data: a new member starts on TLS (or rejoins on it), never moves.
    assert not etcd.needs_switch(has_data=False, plain_file=True, plain_membership=True)


def test_which_patroni_restarts_onto_its_tls_store() -> None:
    assert etcd.patroni_needs_restart(running=True, store="http", restart_marker=False)
    # Its file rewritten by a deploy cut before the restart: still pending.
    assert etcd.patroni_needs_restart(running=True, store="https", restart_marker=True)
    assert not etcd.patroni_needs_restart(running=True, store="https", restart_marker=False)
    # Not running (a new cluster, or stopped): it starts on the new file.
    assert not etcd.patroni_needs_restart(running=False, store="http", restart_marker=True)
    assert not etcd.patroni_needs_restart(running=False, store=None, restart_marker=False)


def test_plain_members_are_read_from_the_membership() -> None:
    membership = {
        "endpoint": "https://127.0.0.1:2379",
        "members": {
            "data-1": {"id": "1", "peer_urls": ["https://10.77.0.11:2380"]},
            "data-2": {"id": "2", "peer_urls": ["http://10.77.0.12:2380"]},
        },
    }
    assert etcd.plain_members(membership) == ["data-2"]
    assert etcd.plain_members(None) == []


# --- the etcd deploy's plan on fake hosts ------------------------------------------------


@dataclass(eq=False)
class Node:
    """A lab host whose facts come from ``state`` (a ``Site``'s); any other fact fails."""

    name: str
    data: dict[str, Any]
    groups: list[str]
    site: "Site"
    logs: list[str] = field(default_factory=list)

    def get_fact(self, fact: Any, **kwargs: Any) -> Any:
        return self.site.answer(self, fact.__name__, kwargs)

    def log(self, message: str, *args: Any) -> None:
        self.logs.append(message)


PLAIN = ['ETCD_LISTEN_PEER_URLS="http://10.77.0.11:2380"']


@dataclass
class Site:
    """What every lab host would say: etcd running or not, on plain HTTP or TLS."""

    running: bool = True
    plain: bool = False
    patroni_store: str | None = "https"
    restart_marker: tuple[str, ...] = ()
    tls_files: bool = True
    absent: tuple[str, ...] = ()
    nodes: list[Node] = field(default_factory=list)

    def answer(self, node: Node, fact: str, kwargs: dict[str, Any]) -> Any:
        etcd_host = "etcd" in node.groups
        if fact == "UnitState" and kwargs["unit"] == "etcd.service" and etcd_host:
            return {"sub": "running" if self.running else "dead"}
        if fact == "UnitState" and kwargs["unit"].startswith("patroni@"):
            return {"sub": "running" if self.running else "dead"}
        if fact == "Directory" and etcd_host:
            return {"mode": 700} if self.running else None
        if fact == "EtcdHealth" and etcd_host:
            return dict.fromkeys(kwargs["endpoints"], self.running)
        if fact == "FindInFile" and kwargs["path"] == etcd.DEFAULTS_FILE and etcd_host:
            if kwargs["pattern"] == etcd.STATE_PATTERN:
                return ['ETCD_INITIAL_CLUSTER_STATE="new"'] if self.running else None
            if kwargs["pattern"] == etcd.PLAIN_PATTERN:
                return PLAIN if self.plain else ([] if self.running else None)
        if fact == "EtcdConfigPending" and etcd_host:
            return False
        if fact == "EtcdMembers" and etcd_host:
            if not self.running:
                return None
            scheme = "http" if self.plain else "https"
            return {
                "endpoint": f"{scheme}://127.0.0.1:2379",
                "members": {
                    one.name: {
                        "id": "1",
                        "peer_urls": [f"{scheme}://{one.data['private_address']}:2380"],
                    }
                    for one in self.nodes
                    if "etcd" in one.groups
                },
            }
        if fact == "PatroniStore" and "postgres" in node.groups:
            return self.patroni_store if self.running else None
        if fact == "File" and kwargs["path"] == names.PATRONI_RESTART_MARKER:
            return {"mode": 644} if node.name in self.restart_marker else None
        if fact == "File" and kwargs["path"].startswith("/etc/seawall/etcd-tls/"):
            return {"mode": 644} if self.tls_files else None
        raise AssertionError(f"{node.name}: unexpected fact {fact} {kwargs}")


class FakeInventory:
    def __init__(self, site: Site) -> None:
        self.site = site

    def __iter__(self) -> Any:
        return iter(self.site.nodes)

    def get_group(self, name: str, default: Any = None) -> list[Node]:
        return [one for one in self.site.nodes if name in one.groups] or default

    def get_active_hosts(self) -> list[Node]:
        return [one for one in self.site.nodes if one.name not in self.site.absent]

    def get_host(self, name: str) -> Node:
        return next(one for one in self.site.nodes if one.name == name)


ETCD_OPS = (
    "barrier",
    "tls_ca",
    "tls_key",
    "tls_signed",
    "tls_certificate",
    "patroni_paused",
    "member_rejoined",
    "member_restarted",
    "member_switched_to_tls",
)


def plan(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, name: str, site: Site
) -> tuple[Node, list[Call]]:
    """Run ``deploy_etcd`` for lab host ``name`` on a fake host; return it and its calls."""
    site.nodes = [Node(one.name, dict(one.data), list(one.groups), site) for one in lab]
    me = next(one for one in site.nodes if one.name == name)
    fake = FakeInventory(site)
    calls: list[Call] = []
    monkeypatch.setattr(etcd, "host", me)
    monkeypatch.setattr(etcd, "inventory", fake)
    monkeypatch.setattr(
        etcd,
        "group_members",
        lambda group: [(one.name, one.data["private_address"]) for one in fake.get_group(group)],
    )
    for module in ("files", "server", "systemd"):
        monkeypatch.setattr(etcd, module, Recorder(module, calls))
    ops = Recorder("seawall", calls)
    for op in ETCD_OPS:
        monkeypatch.setattr(etcd, op, getattr(ops, op))
    monkeypatch.setattr(
        etcd,
        "install_packages",
        lambda name, packages: calls.append(Call("install", {"name": name, "packages": packages})),
    )
    monkeypatch.setattr(
        etcd,
        "unit_dropin",
        lambda name, content, dest, unit: ops.unit_dropin(name=name, src=content, dest=dest),
    )
    etcd.deploy_etcd._inner()
    return me, calls


CHANGES_A_RUNNING_CLUSTER = {
    "seawall.patroni_paused",
    "seawall.member_switched_to_tls",
    "seawall.member_restarted",
    "seawall.member_rejoined",
}


def test_a_new_cluster_starts_on_tls_with_no_move(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = plan(monkeypatch, lab, "data-1", Site(running=False, tls_files=False))
    assert ops_of(calls) == [
        "install",
        "server.group",
        "seawall.tls_key",
        "seawall.barrier",
        "seawall.barrier",
        "seawall.tls_certificate",
        "files.put",
        "seawall.unit_dropin",
        "systemd.service",
    ]
    assert not CHANGES_A_RUNNING_CLUSTER & set(ops_of(calls))
    assert calls[0].kwargs["packages"] == ["etcd-server", "etcd-client", "openssl"]
    # Its first start reads TLS: "new", on the HTTPS initial cluster.
    config = _env(one_call(calls, "files.put").kwargs["src"].getvalue())
    assert config["ETCD_INITIAL_CLUSTER_STATE"] == "new"
    assert config["ETCD_INITIAL_CLUSTER"].startswith("data-1=https://10.77.0.11:2380,")


def test_the_ops_host_makes_the_ca_and_signs_every_member_and_patroni_host(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = plan(monkeypatch, lab, "ops-1", Site(running=False))
    assert ops_of(calls) == [
        "install",
        "seawall.tls_ca",
        "seawall.barrier",
        "seawall.tls_signed",
        "seawall.barrier",
    ]
    made = one_call(calls, "seawall.tls_ca").kwargs
    assert made["directory"] == "/etc/seawall/etcd-ca" and made["days"] == 3650
    signed = one_call(calls, "seawall.tls_signed").kwargs
    assert signed["directory"] == "/etc/seawall/etcd-ca"
    assert signed["peers"] == [
        (one.name, "/etc/seawall/etcd-tls/host.csr", one.address)
        for one in lab.group("etcd")  # data-1 and data-2 are Postgres hosts too
    ]
    assert signed["extra_addresses"] == ["127.0.0.1"]
    assert (signed["days"], signed["renew_days"]) == (397, 30)


def test_hosts_with_no_etcd_part_are_left_alone(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    for name in ("app-1", "gw-1"):
        assert plan(monkeypatch, lab, name, Site())[1] == []


def test_keys_are_made_before_the_ca_signs_and_signed_before_any_install(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    # pyinfra orders hosts' operations only by each host's own sequence: the
    # same two barriers on the key holders and the CA put the signing between
    # every request and every install (without them, the lab's move signed
    # before any request existed).
    _, member = plan(monkeypatch, lab, "data-3", Site())
    _, ca = plan(monkeypatch, lab, "ops-1", Site())
    held = [op for op in ops_of(member) if op.startswith("seawall.tls") or op == "seawall.barrier"]
    assert held == [
        "seawall.tls_key",
        "seawall.barrier",
        "seawall.barrier",
        "seawall.tls_certificate",
    ]
    signs = [op for op in ops_of(ca) if op.startswith("seawall.tls") or op == "seawall.barrier"]
    assert signs == ["seawall.tls_ca", "seawall.barrier", "seawall.tls_signed", "seawall.barrier"]

    def barriers(calls: list[Call]) -> list[str]:
        return [str(call.kwargs["name"]) for call in calls if call.op == "seawall.barrier"]

    assert barriers(member) == barriers(ca)


def test_a_running_plain_cluster_is_moved_in_order(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    site = Site(plain=True, patroni_store="http")
    _, first = plan(monkeypatch, lab, "data-1", site)
    # data-1: the first Postgres host pauses Patroni; then it moves its own member.
    assert [op for op in ops_of(first) if op.startswith("seawall.")] == [
        "seawall.tls_key",
        "seawall.barrier",
        "seawall.barrier",
        "seawall.tls_certificate",
        "seawall.patroni_paused",
        "seawall.unit_dropin",
        "seawall.member_switched_to_tls",
    ]
    ops = ops_of(first)
    assert ops.index("seawall.tls_certificate") < ops.index("seawall.patroni_paused")
    assert ops.index("seawall.patroni_paused") < ops.index("files.put")
    paused = one_call(first, "seawall.patroni_paused").kwargs
    assert paused["marker"] == names.PATRONI_PAUSE_MARKER
    assert [member[0] for member in paused["members"]] == ["data-1", "data-2"]
    switch = one_call(first, "seawall.member_switched_to_tls").kwargs
    assert switch["_serial"] is True
    assert switch["peer_url"] == "https://10.77.0.11:2380"
    assert switch["peers"] == ["10.77.0.12:2381", "10.77.0.13:2381"]
    assert switch["legacy_port"] == 2379
    assert switch["clients"] == ["127.0.0.1:2379", "10.77.0.12:2379", "10.77.0.13:2379"]
    assert switch["patroni"] == [
        ("data-1", "patroni@15-main.service", "10.77.0.11:8008"),
        ("data-2", "patroni@15-main.service", "10.77.0.12:8008"),
    ]
    # No plain restart besides: the move restarts it.
    assert "seawall.member_restarted" not in ops
    # data-3 moves too, but pauses nothing (data-1 does, before any move).
    _, third = plan(monkeypatch, lab, "data-3", site)
    assert "seawall.patroni_paused" not in ops_of(third)
    assert "seawall.member_switched_to_tls" in ops_of(third)
    # The move is one operation of all members; data-1 calls the pause before it,
    # so pyinfra runs the pause before any member moves.
    assert ops.index("seawall.patroni_paused") < ops.index("seawall.member_switched_to_tls")


def test_a_member_started_on_tls_with_a_plain_peer_url_still_moves(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    # Stopped during the deploy that moved the others, it started on its TLS
    # file: its file is TLS but its peer URL in the membership is not.
    site = Site(plain=False)
    original = site.answer

    def answer(node: Node, fact: str, kwargs: dict[str, Any]) -> Any:
        value = original(node, fact, kwargs)
        if fact == "EtcdMembers" and value:
            value["members"]["data-2"]["peer_urls"] = ["http://10.77.0.12:2380"]
        return value

    monkeypatch.setattr(site, "answer", answer)
    _, second = plan(monkeypatch, lab, "data-2", site)
    assert "seawall.member_switched_to_tls" in ops_of(second)
    _, first = plan(monkeypatch, lab, "data-1", site)
    assert "seawall.patroni_paused" in ops_of(first)
    assert "seawall.member_switched_to_tls" not in ops_of(first)


def test_a_patroni_left_on_its_plain_store_pauses_the_cluster_again(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    # A deploy cut after etcd moved, before data-2's Patroni restarted.
    site = Site(restart_marker=("data-2",))
    _, first = plan(monkeypatch, lab, "data-1", site)
    assert "seawall.patroni_paused" in ops_of(first)
    assert not {"seawall.member_switched_to_tls", "seawall.member_restarted"} & set(ops_of(first))


def test_a_redeploy_with_everything_in_place_changes_no_running_daemon(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    for name in ("data-1", "data-2", "data-3", "ops-1"):
        _, calls = plan(monkeypatch, lab, name, Site())
        assert not CHANGES_A_RUNNING_CLUSTER & set(ops_of(calls)), name


def test_a_changed_configuration_restarts_one_member_at_a_time(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    site = Site()
    original = site.answer
    monkeypatch.setattr(
        site,
        "answer",
        lambda node, fact, kwargs: (
            True if fact == "EtcdConfigPending" else original(node, fact, kwargs)
        ),
    )
    _, calls = plan(monkeypatch, lab, "data-3", site)
    restart = one_call(calls, "seawall.member_restarted").kwargs
    assert restart["_serial"] is True
    assert restart["peers"] == ["10.77.0.11:2381", "10.77.0.12:2381"]
    assert "seawall.member_switched_to_tls" not in ops_of(calls)


def test_without_the_ops_host_a_host_with_no_certificate_stops_the_run(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    with pytest.raises(DeployError) as raised:
        plan(monkeypatch, lab, "data-2", Site(tls_files=False, absent=("ops-1",)))
    assert str(raised.value) == (
        "data-2: /etc/seawall/etcd-tls/host.key is missing and ops-1 (the etcd CA) is not in "
        "this run: data-2 cannot get its etcd certificate; deploy with ops-1"
    )


def test_without_the_ops_host_a_host_with_its_certificate_deploys_as_usual(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    me, calls = plan(monkeypatch, lab, "data-2", Site(absent=("ops-1",)))
    assert "seawall.tls_certificate" not in ops_of(calls)
    assert "seawall.tls_key" in ops_of(calls) and "files.put" in ops_of(calls)
    assert me.logs == ["ops-1 is not in this run: this host's etcd certificate stays as it is"]
    assert not CHANGES_A_RUNNING_CLUSTER & set(ops_of(calls))


def test_the_move_needs_every_etcd_and_postgres_host_in_the_run(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    site = Site(plain=True, patroni_store="http", absent=("data-2",))
    with pytest.raises(DeployError) as raised:
        plan(monkeypatch, lab, "data-1", site)
    assert str(raised.value) == (
        "data-1: moving etcd to TLS needs every etcd and Postgres host in the run; "
        "data-2 is not: nothing was changed"
    )
    with pytest.raises(DeployError, match="^data-3: moving data-3's etcd member to TLS needs"):
        plan(monkeypatch, lab, "data-3", site)


def test_an_inventory_without_an_ops_host_cannot_have_etcd(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    site = Site()
    original = FakeInventory.get_group
    monkeypatch.setattr(
        FakeInventory,
        "get_group",
        lambda self, name, default=None: default if name == "ops" else original(self, name),
    )
    with pytest.raises(DeployError, match="^data-1: etcd takes only peers and clients"):
        plan(monkeypatch, lab, "data-1", site)
    # A host with no etcd part is not stopped for it.
    assert plan(monkeypatch, lab, "app-1", site)[1] == []


# --- the Postgres deploy's part ------------------------------------------------------------


def _postgres(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, name: str, **facts: Any
) -> list[dict[str, Any]]:
    with monkeypatch.context() as patch:
        return test_deploy_phases.record(patch, lab, postgres, name, **facts)


def _names(ops: list[dict[str, Any]]) -> list[str]:
    return [str(op.get("name")) for op in ops]


def test_a_patroni_on_its_plain_store_is_marked_then_restarted_paused(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    ops = _postgres(monkeypatch, lab, "data-2", store="http")
    names_ = _names(ops)
    mark = names_.index("Mark Patroni's restart onto its TLS store as pending")
    configure = names_.index("Configure this Patroni member")
    restart = next(
        i for i, op in enumerate(ops) if op["op"] == "seawall.patroni_restarted_on_store"
    )
    assert mark < configure < restart
    assert ops[mark]["dest"] == names.PATRONI_RESTART_MARKER
    done = ops[restart]
    assert done["_serial"] is True and done["marker"] == names.PATRONI_RESTART_MARKER
    assert done["etcd"] == [
        [one.name, f"https://{one.address}:2379", f"{one.address}:2381"]
        for one in lab.group("etcd")
    ]
    assert (done["tls_dir"], done["tls_group"]) == ("/etc/seawall/etcd-tls", "seawall-etcd-tls")
    # A reload never changes Patroni's store: it is restarted, then reloaded only once
    # that restart ran (so Postgres rereads its TLS settings: a Patroni joining a
    # running replica may leave postgresql.conf as it was), never before it.
    reload = names_.index("Reload Patroni (its configuration or certificate changed)")
    wait = names_.index("Wait until Postgres serves TLS after its reload")
    assert restart < reload < wait
    after_restart = {"did_change": done["name"]}
    assert ops[reload]["_if"] == after_restart and ops[wait]["_if"] == after_restart


def test_a_deploy_cut_before_the_restart_restarts_the_next_time(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    ops = _postgres(monkeypatch, lab, "data-2", store="https", restart_marker=True)
    assert "seawall.patroni_restarted_on_store" in [op["op"] for op in ops]


def test_the_first_postgres_host_resumes_last(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    ops = _postgres(monkeypatch, lab, "data-1", store="http")
    assert ops[-1]["op"] == "seawall.patroni_resumed"
    assert ops[-1]["marker"] == names.PATRONI_PAUSE_MARKER
    assert ops[-1]["restart_marker"] == names.PATRONI_RESTART_MARKER
    restart = [op["op"] for op in ops].index("seawall.patroni_restarted_on_store")
    assert restart < len(ops) - 1
    # The other Postgres host never resumes: one host decides.
    other = _postgres(monkeypatch, lab, "data-2", store="http")
    assert "seawall.patroni_resumed" not in [op["op"] for op in other]


def test_a_patroni_on_its_tls_store_is_only_reloaded_on_change(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    for was_running in (True, False):
        ops = _postgres(monkeypatch, lab, "data-2", was_running=was_running)
        assert "seawall.patroni_restarted_on_store" not in [op["op"] for op in ops]
        assert "Mark Patroni's restart onto its TLS store as pending" not in _names(ops)
        # On change only: its file or its Postgres certificate.
        reloads = [op for op in ops if op["op"] == "systemd.service" and op.get("reloaded")]
        assert [op["_if"] for op in reloads] == (
            [
                {
                    "any_changed": [
                        "<Configure this Patroni member>",
                        "<Install this member's Postgres certificate and the CA's>",
                    ]
                }
            ]
            if was_running
            else []
        )
    # Not running yet (a new cluster): it starts on the TLS file, nothing to restart.
    fresh = _postgres(monkeypatch, lab, "data-2", was_running=False, store="http")
    assert "seawall.patroni_restarted_on_store" not in [op["op"] for op in fresh]


def test_the_site_deploys_etcd_before_postgres() -> None:
    # The pause (etcd deploy) comes before any Patroni restart and the resume (postgres deploy).
    site = (REPO / "deploys" / "site.py").read_text()
    assert site.index('"deploys/etcd.py"') < site.index('"deploys/postgres.py"')


# --- status: etcd health on the metrics port, a paused cluster flagged --------------------


def test_status_asks_etcd_health_on_the_metrics_port_and_flags_a_pause(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    from seawall.postgres import status

    members = [
        {"name": "data-1", "role": "leader", "state": "running"},
        {"name": "data-2", "role": "sync_standby", "state": "running", "lag": 0},
    ]
    paused = {"members": members, "pause": True}
    asked: list[str] = []

    def http_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
        asked.append(url)
        return 200, {"health": "true"}

    monkeypatch.setattr(status, "require_lab_network", lambda topology: None)
    monkeypatch.setattr(status, "http_json", http_json)
    monkeypatch.setattr(
        status, "_ask", lambda host: (200, paused, 200 if host.name == "data-1" else 503)
    )
    report = status.postgres_status(lab)
    assert asked == [f"http://{one.address}:2381/health" for one in lab.group("etcd")]
    assert report.problems == ["Patroni is paused (maintenance mode): no automatic failover"]
    monkeypatch.setattr(
        status,
        "_ask",
        lambda host: (200, {"members": members}, 200 if host.name == "data-1" else 503),
    )
    assert status.postgres_status(lab).ok


def test_verify_fails_the_leader_of_a_paused_cluster(lab: inventory.Topology) -> None:
    from seawall.postgres.status import PAUSED, PostgresStatus
    from seawall.verify import cluster
    from tests.unit.test_verify import LEADING, SYNC, failing, postgres

    status: PostgresStatus = postgres([LEADING, SYNC])
    assert failing(cluster.postgres_findings(lab, status)) == []
    status.problems.append(PAUSED)
    found = cluster.postgres_findings(lab, status)
    assert failing(found) == [("data-1", "patroni")]
    assert found["data-1"][0].detail.endswith("; paused: no automatic failover")
