"""Postgres HA on the real lab: etcd, Patroni, routing, drills, trade-store migration.

Asks the services (etcdctl, Patroni's REST API, Postgres through PgBouncer and
HAProxy), never their files. Drills run once per scenario here; the 5-run
medians live in bench/postgres.py and docs/benchmarks.md.
"""

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import psycopg
import pytest

from seawall import names
from seawall.components import postgres
from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.postgres import drill, tradestore
from seawall.postgres.restore import restore_drill
from seawall.postgres.status import cluster, http_json, leader_of, postgres_status
from seawall.postgres.tunnel import tunnel
from seawall.ssh import run as ssh_run
from tests.lab.conftest import PYINFRA, ROOT, changed_operations
from tests.lab.timelines import check_postgres_timeline

OWN_DEPLOYS = [
    "deploys/etcd.py",
    "deploys/postgres.py",
    "deploys/pgroute.py",
    "deploys/pgbackrest.py",
]


def run_own_deploys() -> subprocess.CompletedProcess[str]:
    """Run this module's deploys (not the whole site: other concerns have their own tests).

    Under the data-fault lock, so no other drill's fault lands in the middle of it.
    """
    with drill.data_fault_lock(print):
        return subprocess.run(
            [PYINFRA, "-y", "--json", "inventories/lab.py", *OWN_DEPLOYS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )


@pytest.fixture(scope="module")
def pg_lab(deployed_lab: Topology) -> Topology:
    healthy, _ = drill.wait_healthy(deployed_lab, 180)
    assert healthy, postgres_status(deployed_lab).to_text()
    return deployed_lab


def test_etcd_has_three_healthy_members(pg_lab: Topology) -> None:
    first = pg_lab.group("etcd")[0]
    # Over HTTPS with the member's own certificate: etcd takes no client without one.
    result = ssh_run(pg_lab, first.name, f"{names.etcdctl(first.data)} endpoint health --cluster")
    assert result.returncode == 0, result.stderr
    # etcdctl reports health on stderr.
    output = result.stdout + result.stderr
    assert output.count("is healthy") == len(pg_lab.group("etcd")), output


def test_patroni_has_a_leader_and_a_synchronous_standby(pg_lab: Topology) -> None:
    report = postgres_status(pg_lab)
    assert report.ok, report.to_text()
    roles = sorted(member.role for member in report.members)
    assert roles == ["leader", "sync_standby"]
    # patronictl agrees with the REST API.
    result = ssh_run(pg_lab, report.leader or "", "patronictl -c /etc/patroni/15-main.yml list")
    assert "Sync Standby" in result.stdout


def test_dynamic_settings_come_from_the_inventory(pg_lab: Topology) -> None:
    host = pg_lab.group("postgres")[0]
    status, config = http_json(f"http://{host.address}:{host.data['patroni_rest_port']}/config")
    assert status == 200
    assert (config["ttl"], config["loop_wait"], config["retry_timeout"]) == (
        host.data["patroni_ttl"],
        host.data["patroni_loop_wait"],
        host.data["patroni_retry_timeout"],
    )
    assert config["synchronous_mode"] is True
    assert config["postgresql"]["use_pg_rewind"] is True
    assert str(config["postgresql"]["parameters"]["wal_log_hints"]) == "on"


def test_second_deploy_changes_nothing(pg_lab: Topology) -> None:
    assert changed_operations(run_own_deploys()) == {}


def test_services_reach_leader_and_replica_through_pgbouncer(pg_lab: Topology) -> None:
    app = pg_lab.group("app")[0]
    with tunnel(pg_lab, app.name, app.data["pgbouncer_port"]) as port:
        common = dict(
            host="127.0.0.1",
            port=port,
            user="probe",
            password=drill.role_password(pg_lab, "probe"),
            prepare_threshold=None,
            connect_timeout=5,
        )
        with psycopg.connect(dbname="probe", **common) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        with psycopg.connect(dbname="probe_ro", **common) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        # One role per service, confined to its databases.
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dbname="trading", **common).close()


@pytest.mark.parametrize("scenario", list(drill.SCENARIOS))
def test_drill_scenario(pg_lab: Topology, scenario: str, tmp_path: Path) -> None:
    report = drill.drill_postgres(pg_lab, [scenario], log=print)
    result = report.results[0]
    check_postgres_timeline(result, scenario, tmp_path, failover=scenario == "leader-host-crash")
    assert result.lost == 0, result
    assert result.committed > 100, result
    # The old leader (or the lost replica) is back as a running member in time.
    assert result.rejoin_s is not None, result
    # One run on a shared machine: the outage targets are judged on the
    # 5-run medians (bench/postgres.py); here only a gross miss fails.
    assert result.outage_limit_s is not None
    assert result.write_outage_s <= 2 * result.outage_limit_s, result
    others = [p for p in result.problems if not p.startswith("write outage")]
    assert others == [], others


def test_redeploy_after_switchover_changes_nothing_and_keeps_the_leader(pg_lab: Topology) -> None:
    report = drill.drill_postgres(pg_lab, ["switchover"], log=print)
    assert report.results[0].lost == 0, report.to_text()
    assert report.results[0].new_leader != report.results[0].old_leader
    leader = leader_of(cluster(pg_lab).members)
    assert leader == report.results[0].new_leader
    assert changed_operations(run_own_deploys()) == {}
    assert leader_of(cluster(pg_lab).members) == leader


def test_tradestore_migration_resumes_verifies_and_is_idempotent(
    pg_lab: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tradestore.sample_trade_store(tmp_path / "trades.db", trades=20000)
    app = pg_lab.group("app")[0]
    monkeypatch.setenv("PGPASSWORD", drill.role_password(pg_lab, "probe"))
    # The migration talks to the leader through HAProxy's read-write port.
    with tunnel(pg_lab, app.name, app.data["haproxy_rw_port"]) as port:
        # TLS on the app host's hop to the member (sslmode=require: this machine holds
        # no copy of the Postgres CA; the tunnel to the app host is SSH).
        dsn = f"host=127.0.0.1 port={port} dbname=probe user=probe sslmode=require"
        with psycopg.connect(dsn, autocommit=True) as conn:
            for table in ("trades", "positions", tradestore.PROGRESS_TABLE):
                conn.execute(f"DROP TABLE IF EXISTS {table}")

        # Interrupted after `positions` (one batch) and the first batch of `trades`.
        with pytest.raises(SeawallError, match="stopped after 2 batches"):
            tradestore.migrate(store, dsn, batch_size=5000, stop_after_batches=2)
        resumed = tradestore.migrate(store, dsn, batch_size=5000)
        assert resumed.ok, resumed.to_text()
        copied = {t.name: t.copied for t in resumed.tables}
        assert copied == {"positions": 0, "trades": 15000}
        assert {t.name: t.postgres_rows for t in resumed.tables}["trades"] == 20000

        again = tradestore.migrate(store, dsn, batch_size=5000)
        assert again.ok and again.copied == 0

        # A clashing schema changes nothing and says why.
        clash = tmp_path / "clash.db"
        with sqlite3.connect(clash) as other:
            other.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, venue TEXT)")
            other.execute("CREATE TABLE fresh (id INTEGER PRIMARY KEY)")
        with pytest.raises(SeawallError, match="schema clash"):
            tradestore.migrate(clash, dsn)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM trades").fetchone() == (20000,)
            assert conn.execute("SELECT to_regclass('fresh')").fetchone() == (None,)


def test_tradestore_cli_reports_verified(pg_lab: Topology, tmp_path: Path) -> None:
    store = tradestore.sample_trade_store(tmp_path / "trades.db", trades=20000)
    app = pg_lab.group("app")[0]
    seawall = str(Path(PYINFRA).with_name("seawall"))
    with tunnel(pg_lab, app.name, app.data["haproxy_rw_port"]) as port:
        result = subprocess.run(
            [seawall, "tradestore", "migrate", "--sqlite", str(store), "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            env={
                **os.environ,
                "PGPASSWORD": drill.role_password(pg_lab, "probe"),
                "SEAWALL_TRADESTORE_DSN": (
                    f"host=127.0.0.1 port={port} dbname=probe user=probe sslmode=require"
                ),
            },
        )
    assert result.returncode == 0, result.stderr
    assert '"ok": true' in result.stdout


def test_wal_is_archived_and_a_backup_restores(pg_lab: Topology) -> None:
    repo = pg_lab.group("ops")[0]
    check = ssh_run(
        pg_lab,
        repo.name,
        f"cd / && runuser -u {repo.data['pgbackrest_user']} -- "
        f"pgbackrest --stanza={repo.data['pgbackrest_stanza']} check",
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    timer = ssh_run(pg_lab, repo.name, "systemctl is-enabled seawall-pgbackrest-full.timer")
    assert timer.stdout.strip() == "enabled"
    report = restore_drill(pg_lab, log=print)
    assert report.ok, report.to_text()
    assert report.rows_restored == report.rows_written > 0


def test_the_backup_keys_run_pgbackrest_remote_only(pg_lab: Topology) -> None:
    """Each side's backup key, used by its own account, gets no shell on the other side."""
    repo = pg_lab.group("ops")[0]
    member = pg_lab.group("postgres")[0]
    backup_user = repo.data["pgbackrest_user"]
    logins = [
        (member.name, "postgres", f"{backup_user}@{repo.address}"),
        (repo.name, backup_user, f"postgres@{member.address}"),
    ]
    for source, account, target in logins:
        for request in ("id", "pgbackrest info"):
            result = ssh_run(
                pg_lab,
                source,
                f"cd / && runuser -u {account} -- ssh -o BatchMode=yes {target} {request}",
                timeout=60,
            )
            assert result.returncode == 126, (source, request, result.stdout, result.stderr)
            assert "seawall: this key runs pgBackRest" in result.stderr, result.stderr
            assert "uid=" not in result.stdout


def test_wal_markers_callback_unblocks_segments_the_repository_holds(pg_lab: Topology) -> None:
    # On the replica, whose archiver is idle (archive_mode=on): plant the markers
    # pg_rewind leaves behind, one for a segment the repository holds, one not.
    leader = leader_of(cluster(pg_lab).members)
    replica = next(h for h in pg_lab.group("postgres") if h.name != leader)
    data = replica.data
    status_dir = f"{postgres.data_dir(data)}/pg_wal/archive_status"

    def sh(command: str) -> str:
        result = ssh_run(pg_lab, replica.name, f"cd / && runuser -u postgres -- {command}")
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    info = sh(f"pgbackrest --stanza={data['pgbackrest_stanza']} --output=json info")
    held = json.loads(info)[0]["archive"][0]["min"]
    absent = "000000FF00000000000000FF"
    had_done = f"{held}.done" in sh(f"ls {status_dir}").split()
    sh(f"touch {status_dir}/{held}.ready {status_dir}/{absent}.ready")
    try:
        sh(f"{postgres.WAL_MARKERS} on_role_change replica {data['patroni_scope']}")
        assert {f"{held}.ready", f"{absent}.ready"} <= set(sh(f"ls {status_dir}").split())
        out = sh(f"{postgres.WAL_MARKERS} on_role_change master {data['patroni_scope']}")
        assert held in out
        names = set(sh(f"ls {status_dir}").split())
        assert f"{held}.done" in names and f"{held}.ready" not in names
        assert f"{absent}.ready" in names
    finally:
        leftovers = [f"{status_dir}/{absent}.ready", f"{status_dir}/{held}.ready"]
        if not had_done:
            leftovers.append(f"{status_dir}/{held}.done")
        sh(f"rm -f {' '.join(leftovers)}")
