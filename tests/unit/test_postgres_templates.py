"""The Postgres-side deploys: templates rendered with lab data, settings logic, SCRAM."""

from typing import Any

import pytest
import yaml

from seawall import inventory
from seawall.components import etcd, postgres
from seawall.components.templates import render, template_path
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
    assert f'ETCD_LISTEN_PEER_URLS="http://{member.address}:{peer}"' in text
    assert (
        f'ETCD_LISTEN_CLIENT_URLS="http://{member.address}:{client},http://127.0.0.1:{client}"'
    ) in text
    cluster = ",".join(f"{m.name}=http://{m.address}:{peer}" for m in lab.group("etcd"))
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
    for app in lab.group("app"):
        assert f"host all all {app.address}/32 scram-sha-256" in hba
    # Nothing but app hosts and peers over the network, and never trust/md5.
    assert not any("0.0.0.0" in line or "trust" in line or "md5" in line for line in hba)


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
