"""Redis HA on the lab: asked of Redis and Sentinel themselves, under real faults."""

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from seawall.inventory import Topology
from seawall.redis.client import majority_client, redis_settings
from seawall.redis.drill import (
    CUTS,
    FLAP_CYCLES,
    FLAPPING,
    LAGGING,
    SECOND_FAULT,
    SINGLE_FAULTS,
    DrillResult,
    run_drill,
    switchover,
    wait_healthy,
)
from seawall.redis.topology import redis_status
from seawall.runtime.reconnect import (
    EventPublisher,
    MajorityClient,
    RedisAuthError,
    RedisUnavailableError,
    connect,
)
from tests.lab.conftest import changed_operations, run_site_deploy
from tests.lab.timelines import check_redis_timeline, drawn


def test_one_master_two_replicas_and_sentinels_agree(deployed_lab: Topology) -> None:
    status = wait_healthy(deployed_lab)
    roles = sorted(node.role for node in status.nodes)
    assert roles == ["master", "replica", "replica"]
    assert status.agreeing == len(deployed_lab.group("sentinel")) == 3
    assert all(node.link == "connected" for node in status.nodes if node.role == "replica")


def test_redis_settings_are_live(deployed_lab: Topology) -> None:
    settings = redis_settings(deployed_lab)
    for host in deployed_lab.group("redis"):
        conn = connect(host.address, int(host.data["redis_port"]), settings.password, 2)
        config = {
            key: conn.config_get(key)[key]
            for key in (
                "bind",
                "protected-mode",
                "appendonly",
                "appendfsync",
                "maxmemory-policy",
                "min-replicas-to-write",
                "min-replicas-max-lag",
                "repl-diskless-sync-delay",
            )
        }
        conn.close()
        assert config == {
            "bind": f"{host.address} 127.0.0.1",
            "protected-mode": "yes",
            "appendonly": "yes",
            "appendfsync": "everysec",
            "maxmemory-policy": "noeviction",
            "min-replicas-to-write": str(host.data["redis_min_replicas_to_write"]),
            "min-replicas-max-lag": str(host.data["redis_min_replicas_max_lag"]),
            "repl-diskless-sync-delay": str(host.data["redis_repl_diskless_sync_delay"]),
        }


def test_redis_and_sentinel_refuse_clients_without_the_password(deployed_lab: Topology) -> None:
    host = deployed_lab.group("redis")[0]
    for port in (host.data["redis_port"], host.data["sentinel_port"]):
        conn = connect(host.address, int(port), None, 2)
        with pytest.raises(Exception, match="NOAUTH|Authentication required|authenticated"):
            conn.ping()
        conn.close()


def test_wrong_password_is_a_clear_error_not_a_hang(deployed_lab: Topology) -> None:
    good = redis_settings(deployed_lab)
    for wrong in (
        {"password": "wrong"},
        {"sentinel_password": "wrong"},
    ):
        client = MajorityClient(replace(good, **wrong))
        started = time.monotonic()
        with pytest.raises(RedisAuthError, match="password"):
            EventPublisher(client).publish("seawall:test:auth", {"n": 1})
        assert time.monotonic() - started < 3
        client.close()
    assert good.password != "wrong"


def test_unreachable_sentinels_are_a_clear_error_within_the_deadline(
    deployed_lab: Topology,
) -> None:
    settings = redis_settings(deployed_lab, operation_deadline=2.0, socket_timeout=0.3)
    # The lab's own hosts, on a port where nothing listens.
    closed = tuple((address, 1) for address, _ in settings.sentinels)
    client = MajorityClient(replace(settings, sentinels=closed))
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="no Redis master reachable within 2.0 s"):
        client.call(lambda conn: conn.ping())
    assert time.monotonic() - started < 4
    client.close()


@pytest.mark.parametrize("scenario", SINGLE_FAULTS)
def test_drill_loses_and_duplicates_nothing(
    deployed_lab: Topology, scenario: str, tmp_path: Path
) -> None:
    result = run_drill(deployed_lab, scenario, duration=12, fault_at=2, heal_after=6)
    summary = result.to_json()
    if scenario == "master-process-kill":
        check_redis_timeline(result, scenario, 2.0, tmp_path)
    else:
        drawn(result, f"redis-{scenario}", tmp_path)
    assert result.lost_acked == 0, summary
    assert result.lost_spooled == 0, summary
    assert result.duplicated == 0, summary
    assert result.acked > 0, summary
    assert result.healthy_after, summary
    # One fault, at most one failover: a second +switch-master is a storm.
    assert result.switch_masters is not None, summary
    assert result.switch_masters <= (0 if scenario in ("sentinel-down", "replica-down") else 1)
    if result.outage_limit_s is not None:
        assert result.outage_s <= result.outage_limit_s, summary
    if scenario.startswith("master") or scenario == "switchover":
        assert result.new_master != result.old_master, summary
        assert result.old_master_rejoined, summary
    else:
        # Losing one Sentinel or one replica is no reason to fail over.
        assert result.new_master == result.old_master, summary
        assert result.spooled == 0, summary


@pytest.mark.parametrize("scenario", [LAGGING, "cut-heals-9s"])
def test_a_healed_cut_of_every_data_host_loses_no_acknowledged_event(
    deployed_lab: Topology, scenario: str, tmp_path: Path
) -> None:
    # Issue 15: a replica left behind (paused 4 s), then every data host cut off
    # 9 s under a WAIT 1 publisher with its spool; Sentinel may promote the
    # lagging replica when the cut heals. Nothing acknowledged or spooled may go.
    result = run_drill(deployed_lab, scenario, fault_at=2)
    summary = result.to_json()
    if scenario in CUTS:
        check_redis_timeline(result, scenario, 2.0, tmp_path, heal_at=2.0 + CUTS[scenario])
    else:
        drawn(result, f"redis-{scenario}", tmp_path)
    assert result.acked > 0 and result.spooled > 0, summary  # the cut did bite
    assert result.lost_acked == 0, summary
    assert result.lost_spooled == 0, summary
    assert result.duplicated == 0, summary
    assert result.switch_masters is not None and result.switch_masters <= 1, summary
    assert result.healthy_after, summary
    assert result.ok, summary


def _nothing_reported_was_lost(result: DrillResult, tmp_path: Path) -> dict:
    summary = result.to_json()
    drawn(result, f"redis-{result.scenario}", tmp_path)
    assert result.lost_acked == 0, summary
    assert result.lost_spooled == 0, summary
    assert result.duplicated == 0, summary
    assert result.healthy_after, summary
    assert result.switch_masters is not None and not result.storm, summary
    return summary


def test_a_60_s_outage_of_every_data_host_is_spooled_fast_and_replayed(
    deployed_lab: Topology, tmp_path: Path
) -> None:
    result = run_drill(deployed_lab, "long-outage", fault_at=2)
    summary = _nothing_reported_was_lost(result, tmp_path)
    assert result.spooled > 5000, summary  # ~60 s at 100 events/s went to the spool
    # The circuit breaker: while Redis is away publish() costs a spool append
    # (its fsync on this shared disk: ~5-15 ms at p99), not the 1 s publish
    # deadline each, which is what it cost without the breaker. The 5 ms p99
    # target is bench/redis_outage.py's, measured on loopback.
    assert result.publish_p99_ms is not None and result.publish_p99_ms < 100, summary
    assert result.ok, summary


def test_a_full_spool_disk_refuses_loudly_and_loses_nothing_it_took(
    deployed_lab: Topology, tmp_path: Path
) -> None:
    result = run_drill(deployed_lab, "disk-full", fault_at=2)
    summary = _nothing_reported_was_lost(result, tmp_path)
    assert result.refused > 0 and result.spooled > 0, summary  # the disk did fill
    assert result.ok, summary


def test_a_writer_killed_mid_replay_is_resumed_by_the_next_process(
    deployed_lab: Topology, tmp_path: Path
) -> None:
    result = run_drill(deployed_lab, "writer-killed-mid-replay", fault_at=2)
    summary = _nothing_reported_was_lost(result, tmp_path)
    assert result.spooled > 0, summary
    assert any(note.startswith("writer killed with") for note in result.notes), summary
    assert result.ok, summary


@pytest.mark.parametrize("scenario", [FLAPPING, SECOND_FAULT])
def test_repeated_and_overlapping_faults_lose_nothing(
    deployed_lab: Topology, scenario: str, tmp_path: Path
) -> None:
    result = run_drill(deployed_lab, scenario, fault_at=2)
    summary = _nothing_reported_was_lost(result, tmp_path)
    assert result.switch_masters is not None
    assert result.switch_masters <= (FLAP_CYCLES if scenario == FLAPPING else 1), summary
    assert result.ok, summary


def test_redeploy_after_a_failover_changes_nothing(deployed_lab: Topology) -> None:
    before = wait_healthy(deployed_lab).master
    new_master = switchover(deployed_lab)
    assert new_master != before
    wait_healthy(deployed_lab)
    changed = changed_operations(run_site_deploy("--json"))
    assert changed == {}
    after = redis_status(deployed_lab)
    assert after.master == new_master
    assert after.ok


def test_publisher_follows_the_majority(deployed_lab: Topology) -> None:
    client = majority_client(deployed_lab)
    views = [answer for _, answer in client.sentinel_views()]
    assert client.discover() in views
    client.close()


def test_status_and_drill_commands(deployed_lab: Topology) -> None:
    from typer.testing import CliRunner

    from seawall.cli import app

    runner = CliRunner()
    wait_healthy(deployed_lab)
    status = runner.invoke(app, ["status", "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert report["redis"]["agreeing"] == 3
    assert report["redis"]["master_host"] in {h.name for h in deployed_lab.group("redis")}
    unknown = runner.invoke(app, ["drill", "redis", "no-such-scenario", "-y"])
    assert unknown.exit_code == 2
    assert "unknown scenario 'no-such-scenario'" in unknown.stderr
