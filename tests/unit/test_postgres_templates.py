"""The Postgres-side deploys: templates rendered with lab data, settings logic, SCRAM."""

from typing import Any

import pytest
import yaml

from seawall import inventory, names, settings
from seawall.components import etcd, postgres
from seawall.components.templates import render, template_path
from seawall.errors import SeawallError
from seawall.operations import patroni as patroni_ops
from seawall.operations import postgres as postgres_ops
from seawall.postgres import scram

PASSWORDS = {name: f"secret-{name}" for name in postgres.SECRET_NAMES}


def addresses(lab: inventory.Topology, group: str) -> list[str]:
    return [host.address for host in lab.group(group)]


def etcd_context(lab: inventory.Topology, name: str) -> dict[str, Any]:
    members = [(host.name, host.address) for host in lab.group("etcd")]
    return etcd.etcd_context(name, lab.host(name).data, members)


def patroni_context(lab: inventory.Topology, name: str) -> dict[str, Any]:
    return postgres.patroni_context(
        name,
        lab.host(name).data,
        etcd_members=addresses(lab, "etcd"),
        postgres_peers=addresses(lab, "postgres"),
        clients=addresses(lab, "app"),
        passwords=PASSWORDS,
    )


@pytest.mark.parametrize(
    ("concern", "target"),
    [("etcd", t) for t in etcd.TEMPLATES] + [("postgres", t) for t in postgres.TEMPLATES],
)
def test_every_template_names_its_target_first(
    lab: inventory.Topology, concern: str, target: str
) -> None:
    assert template_path(concern, target).is_file()
    context = etcd_context(lab, "data-1") if concern == "etcd" else patroni_context(lab, "data-1")
    first = render(concern, target, context).splitlines()[0]
    where = (
        postgres.patroni_config_path(lab.host("data-1").data) if "patroni/" in target else target
    )
    assert first == f"# {where} - managed by seawall"


def test_etcd_member_lists_every_member_on_private_addresses(lab: inventory.Topology) -> None:
    text = render("etcd", etcd.DEFAULTS_FILE, etcd_context(lab, "data-2"))
    member = lab.host("data-2")
    peer, client = member.data["etcd_peer_port"], member.data["etcd_client_port"]
    assert 'ETCD_NAME="data-2"' in text
    assert f'ETCD_LISTEN_PEER_URLS="https://{member.address}:{peer}"' in text
    assert (
        f'ETCD_LISTEN_CLIENT_URLS="https://{member.address}:{client},https://127.0.0.1:{client}"'
    ) in text
    cluster = ",".join(f"{m.name}=https://{m.address}:{peer}" for m in lab.group("etcd"))
    assert len(lab.group("etcd")) == 3 and f'ETCD_INITIAL_CLUSTER="{cluster}"' in text
    # Never Debian's default data directory, where a stray lone member may live.
    assert "/var/lib/etcd/default" not in text


def test_patroni_config_is_valid_yaml_with_the_traps_avoided(lab: inventory.Topology) -> None:
    text = render("postgres", postgres.PATRONI_TEMPLATE, patroni_context(lab, "data-1"))
    config = yaml.safe_load(text)
    host = lab.host("data-1")
    # etcd 3.4 has the v2 API off: etcd3 only (LAB-NOTES trap 1).
    assert "etcd" not in config
    client = host.data["etcd_client_port"]
    assert config["etcd3"]["hosts"] == [f"{m.address}:{client}" for m in lab.group("etcd")]
    # Over HTTPS, with this host's client certificate (etcd takes no client without one).
    assert {k: v for k, v in config["etcd3"].items() if k != "hosts"} == {
        "protocol": "https",
        "cacert": "/etc/seawall/etcd-tls/ca.pem",
        "cert": "/etc/seawall/etcd-tls/host.pem",
        "key": "/etc/seawall/etcd-tls/host.key",
    }
    # An explicit address, never `:8008` (LAB-NOTES trap 4).
    assert config["restapi"]["listen"] == f"{host.address}:{host.data['patroni_rest_port']}"
    assert config["postgresql"]["connect_address"] == (
        f"{host.address}:{host.data['postgres_port']}"
    )
    dcs = config["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (20, 2, 5)
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    assert dcs["synchronous_mode"] is True
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["parameters"]["wal_log_hints"] == "on"
    assert config["postgresql"]["authentication"]["rewind"]["password"] == (
        "secret-postgres_rewind_password"
    )
    hba = config["postgresql"]["pg_hba"]
    peer = lab.host("data-2").address
    assert f"host postgres rewind_user {peer}/32 scram-sha-256" in hba
    assert f"host replication replicator {peer}/32 scram-sha-256" in hba
    # Nothing but app hosts and peers over the network, and never trust/md5.
    assert not any("0.0.0.0" in line or "trust" in line or "md5" in line for line in hba)


def hba_lines(context: dict[str, Any]) -> list[list[str]]:
    """pg_hba of the rendered Patroni file, each line split into its fields."""
    text = render("postgres", postgres.PATRONI_TEMPLATE, context)
    return [line.split() for line in yaml.safe_load(text)["postgresql"]["pg_hba"]]


def catalogue_pairs(data: Any) -> set[tuple[str, str]]:
    """(database, role) for each owner and reader, read straight from the derived settings."""
    owners = settings.setting(data, "postgres_databases")
    readers = settings.setting(data, "postgres_database_readers")
    return {(db, role) for db, role in owners.items()} | {
        (db, role) for db, roles in readers.items() for role in roles
    }


def client_lines(lines: list[list[str]], clients: list[str]) -> dict[str, set[tuple[str, str]]]:
    by_client: dict[str, set[tuple[str, str]]] = {client: set() for client in clients}
    for fields in lines:
        if fields[0] == "host" and fields[3].removesuffix("/32") in by_client:
            assert fields[4] == "scram-sha-256", fields
            by_client[fields[3].removesuffix("/32")].add((fields[1], fields[2]))
    return by_client


def test_app_hosts_log_in_only_as_a_role_to_a_database_it_owns_or_reads(
    lab: inventory.Topology,
) -> None:
    lines = hba_lines(patroni_context(lab, "data-1"))
    data = lab.host("data-1").data
    wanted = catalogue_pairs(data)
    # The lab's owners and readers, so the check below is not vacuous.
    assert ("trading", "execution") in wanted and ("trading", "backend") in wanted
    assert ("probe", str(data["postgres_drill_role"])) in wanted
    by_client = client_lines(lines, addresses(lab, "app"))
    assert len(by_client) == 2
    for client, pairs in by_client.items():
        # Exactly the catalogue's pairs: none refused that works today, none more.
        assert pairs == wanted, client
        for database, role in pairs:
            assert "all" not in (database, role), (client, database, role)
            assert role not in names.PATRONI_ROLES, (client, role)
    # One line per pair per client, no repeats.
    host_lines = [f for f in lines if f[0] == "host" and f[3] != "127.0.0.1/32"]
    assert len(host_lines) == len({tuple(f) for f in host_lines})


def test_no_superuser_and_nothing_but_patroni_over_tcp_loopback_or_from_peers(
    lab: inventory.Topology,
) -> None:
    lines = hba_lines(patroni_context(lab, "data-1"))
    peers, clients = addresses(lab, "postgres"), addresses(lab, "app")
    assert ["local", "all", "all", "peer"] in lines
    for fields in lines:
        if fields[0] == "local":
            assert fields == ["local", "all", "all", "peer"]
            continue
        assert fields[0] == "host", fields
        # The superuser logs in over the socket only.
        assert fields[2] != "postgres", fields
        address = fields[3].removesuffix("/32")
        if address == "127.0.0.1":
            assert fields[1:3] == ["replication", "replicator"], fields
        elif address in peers:
            assert fields[1:3] in (["replication", "replicator"], ["postgres", "rewind_user"])
        else:
            assert address in clients, fields
    # The peers' lines are Patroni's: replication and rewind from every member.
    for peer in peers:
        assert ["host", "replication", "replicator", f"{peer}/32", "scram-sha-256"] in lines
        assert ["host", "postgres", "rewind_user", f"{peer}/32", "scram-sha-256"] in lines
    # The roles the file's authentication section gives Patroni are the ones kept off clients.
    text = render("postgres", postgres.PATRONI_TEMPLATE, patroni_context(lab, "data-1"))
    auth = yaml.safe_load(text)["postgresql"]["authentication"]
    assert {v["username"] for v in auth.values()} == set(names.PATRONI_ROLES)


AUDIT = {
    "name": "audit",
    "port": 8099,
    "route": "/api/audit/",
    "needs": ["postgres"],
    "postgres_role": "audit",
    "postgres_reads": ["trading"],
}


def test_a_catalogue_service_added_in_data_gets_its_lines(lab: inventory.Topology) -> None:
    data = dict(lab.host("data-1").data)
    data["services"] = [*settings.setting(data, "services"), AUDIT]
    context = postgres.patroni_context(
        "data-1",
        data,
        etcd_members=addresses(lab, "etcd"),
        postgres_peers=addresses(lab, "postgres"),
        clients=addresses(lab, "app"),
        passwords=PASSWORDS,
    )
    before = client_lines(hba_lines(patroni_context(lab, "data-1")), addresses(lab, "app"))
    after = client_lines(hba_lines(context), addresses(lab, "app"))
    for client in addresses(lab, "app"):
        assert after[client] - before[client] == {("audit", "audit"), ("trading", "audit")}
        assert before[client] <= after[client]


def test_client_logins_quote_keywords_and_refuse_patroni_roles() -> None:
    keyword = {"services": [{**AUDIT, "postgres_role": "all", "postgres_reads": []}]}
    # A role named `all` is one role, not every role.
    assert ('"all"', '"all"') in names.client_logins(keyword)
    for role in names.PATRONI_ROLES:
        superuser = {"services": [{**AUDIT, "postgres_role": role}]}
        with pytest.raises(SeawallError, match=role):
            names.client_logins(superuser)


def test_dynamic_config_matches_the_bootstrap_section(lab: inventory.Topology) -> None:
    text = render("postgres", postgres.PATRONI_TEMPLATE, patroni_context(lab, "data-1"))
    bootstrap = yaml.safe_load(text)["bootstrap"]["dcs"]
    desired = postgres.dynamic_config(lab.host("data-1").data)
    assert patroni_ops.config_differences(bootstrap, desired) == []


def test_config_differences_names_changed_and_missing_keys() -> None:
    current = {"ttl": 30, "loop_wait": 2, "postgresql": {"parameters": {"wal_log_hints": True}}}
    desired = {
        "ttl": 20,
        "loop_wait": 2,
        "postgresql": {"parameters": {"wal_log_hints": "true", "max_connections": 200}},
    }
    assert patroni_ops.config_differences(current, desired) == [
        "ttl",
        "postgresql.parameters.max_connections",
    ]
    assert patroni_ops.config_differences(None, {"ttl": 20}) == ["ttl"]


def test_connect_holders_reads_datacl() -> None:
    assert postgres_ops.connect_holders("=Tc/execution execution=CTc/execution") == {
        "PUBLIC",
        "execution",
    }
    assert postgres_ops.connect_holders(
        "=T/execution execution=CTc/execution risk=c/execution"
    ) == {
        "execution",
        "risk",
    }


def test_scram_verifier_round_trip() -> None:
    stored = scram.verifier("hunter2", salt=b"0123456789abcdef")
    assert stored.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert scram.matches(stored, "hunter2")
    assert not scram.matches(stored, "hunter3")
    assert not scram.matches("md5abc", "hunter2")
    assert not scram.matches(None, "hunter2")
    assert not scram.matches("SCRAM-SHA-256$garbage", "hunter2")
    # A fresh salt every time: two verifiers of one password differ, both match.
    assert scram.verifier("x") != scram.verifier("x")
