"""Drill and status logic that needs no server: outage from acknowledgements, reports, routing."""

from pathlib import Path

import pytest

from seawall import inventory
from seawall.components import pgroute
from seawall.components.templates import render, template_path
from seawall.errors import SeawallError
from seawall.postgres import drill, status

REPO = Path(__file__).resolve().parents[2]


def test_outage_is_the_longest_gap_after_the_fault() -> None:
    acks = [[1, 100.0], [2, 100.1], [3, 100.2], [4, 103.7], [5, 103.8]]
    assert drill.write_outage(acks, since=100.15) == pytest.approx(3.5)
    # A long gap that ended before the fault is not the fault's.
    assert drill.write_outage([[1, 90.0], [2, 99.0], [3, 100.5]], since=100.0) == pytest.approx(1.5)
    assert drill.write_outage([], since=0) == 0.0


def test_drill_report_fails_on_any_problem() -> None:
    ok = drill.DrillResult("switchover", "data-1", "data-2", 500, 0, 3, 1.2, 3, 1.5, 0.5)
    bad = drill.DrillResult(
        "leader-host-crash", "data-1", "data-2", 900, 2, 40, 22.0, 25, 21.0, 30.0, ["2 lost"]
    )
    assert drill.DrillReport([ok]).ok
    report = drill.DrillReport([ok, bad])
    assert not report.ok
    assert report.to_json()["results"][1]["ok"] is False
    assert "leader-host-crash: 2 lost" in report.to_text()


def test_unknown_scenario_and_production_inventories_are_refused(
    lab: inventory.Topology,
) -> None:
    with pytest.raises(SeawallError, match="unknown scenario"):
        drill.drill_postgres(lab, ["meteor-strike"])
    production = inventory.load(REPO / "inventories" / "production.example.py")
    with pytest.raises(SeawallError, match="lab inventories only"):
        drill.drill_postgres(production, ["switchover"])


def test_every_scenario_has_an_outage_limit(lab: inventory.Topology) -> None:
    limits = lab.host("data-1").data["postgres_drill_outage_limits"]
    assert set(limits) == set(drill.SCENARIOS)
    # Nothing can beat the leader lock's ttl on a crash: the limit must allow it.
    assert limits["leader-host-crash"] > lab.host("data-1").data["patroni_ttl"]


def test_leader_is_the_running_leader_only() -> None:
    members = [
        {"name": "data-1", "role": "leader", "state": "stopped"},
        {"name": "data-2", "role": "replica", "state": "running"},
    ]
    assert status.leader_of(members) is None
    members[0]["state"] = "running"
    assert status.leader_of(members) == "data-1"


def _patroni_answers(
    monkeypatch: pytest.MonkeyPatch, answers: dict[str, tuple[int, object, int]]
) -> None:
    monkeypatch.setattr(status, "_ask", lambda host: answers[host.name])


def test_cluster_view_comes_from_the_member_holding_the_lock(
    lab: inventory.Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    # data-1 is cut off from etcd: its Patroni still answers with its last view,
    # in which it leads; data-2 holds the lock now (its /primary answers 200).
    stale = {"members": [{"name": "data-1", "role": "leader", "state": "running"}]}
    fresh = {
        "members": [
            {"name": "data-1", "role": "sync_standby", "state": "running"},
            {"name": "data-2", "role": "leader", "state": "running"},
        ]
    }
    _patroni_answers(monkeypatch, {"data-1": (200, stale, 503), "data-2": (200, fresh, 200)})
    view = status.cluster(lab)
    assert view.source == "data-2"
    assert view.primaries == ["data-2"]
    assert status.leader_of(view.members) == "data-2"


def test_a_leader_no_member_confirms_is_not_the_leader(
    lab: inventory.Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = {"members": [{"name": "data-1", "role": "leader", "state": "running"}]}
    _patroni_answers(monkeypatch, {"data-1": (200, stale, 503), "data-2": (0, None, 0)})
    view = status.cluster(lab)
    assert view.source == "data-1"
    assert view.members[0]["state"] == "unconfirmed"
    assert status.leader_of(view.members) is None
    _patroni_answers(monkeypatch, {"data-1": (0, None, 0), "data-2": (0, None, 0)})
    assert status.cluster(lab) == status.ClusterView(None, [], [])


def test_status_text_and_json() -> None:
    report = status.PostgresStatus(
        leader="data-1",
        members=[
            status.Member("data-1", "10.77.0.11", "leader", "running", 1, None),
            status.Member("data-2", "10.77.0.12", "sync_standby", "running", 1, 0),
        ],
        etcd=[status.EtcdMember("data-3", "10.77.0.13", False)],
        problems=["data-3: etcd member unhealthy"],
    )
    assert not report.ok
    assert report.to_json()["leader"] == "data-1"
    assert [m.name for m in report.replicas] == ["data-2"]
    assert "data-3 UNHEALTHY" in report.to_text()


def pgroute_context(lab: inventory.Topology) -> dict:
    members = [(host.name, host.address) for host in lab.group("postgres")]
    return pgroute.pgroute_context(lab.host("app-1").data, members, {"execution": "pw-e"})


@pytest.mark.parametrize("target", pgroute.TEMPLATES)
def test_routing_templates_name_their_target(lab: inventory.Topology, target: str) -> None:
    assert template_path(pgroute.CONCERN, target).is_file()
    first = render(pgroute.CONCERN, target, pgroute_context(lab)).splitlines()[0]
    assert first.lstrip("#; ") == f"{target} - managed by seawall"


def test_haproxy_routes_loopback_ports_by_patroni_health(lab: inventory.Topology) -> None:
    text = render(pgroute.CONCERN, pgroute.HAPROXY_CFG, pgroute_context(lab))
    app = lab.host("app-1").data
    assert f"bind 127.0.0.1:{app['haproxy_rw_port']}" in text
    assert f"bind 127.0.0.1:{app['haproxy_ro_port']}" in text
    assert "option httpchk OPTIONS /primary" in text
    assert "option httpchk OPTIONS /replica" in text
    for member in lab.group("postgres"):
        assert (
            f"server {member.name} {member.address}:{member.data['postgres_port']} "
            f"check port {member.data['patroni_rest_port']}"
        ) in text
    # A refusing member (a leader shutting down) is not retried with 1 s pauses:
    # PgBouncer retries the login itself, by then against the new leader.
    assert "retries 0" in text
    assert "on-marked-down shutdown-sessions" in text
    assert "0.0.0.0" not in text


def test_pgbouncer_pools_transactions_on_loopback(lab: inventory.Topology) -> None:
    text = render(pgroute.CONCERN, pgroute.PGBOUNCER_INI, pgroute_context(lab))
    assert "listen_addr = 127.0.0.1" in text
    assert "pool_mode = transaction" in text
    assert "auth_type = scram-sha-256" in text
    assert "trading = host=127.0.0.1 port=5000 dbname=trading" in text
    assert "trading_ro = host=127.0.0.1 port=5001 dbname=trading" in text
    users = render(pgroute.CONCERN, pgroute.PGBOUNCER_USERS, pgroute_context(lab))
    assert '"execution" "pw-e"' in users.splitlines()
