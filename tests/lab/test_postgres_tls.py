"""Postgres TLS on the real lab: plain TCP refused, verify-full logs in, replication and
PgBouncer's server connections encrypted and checked, and a redeploy changes nothing.

From app-1, straight to each member with libpq (psycopg; app hosts carry no
psql): ``sslmode=disable`` meets pg_hba's ``hostnossl ... reject``, and
``sslmode=verify-full`` with the Postgres CA the deploy installed on app-1 logs
in as the drill's service role. The password reaches app-1 on the probe's
stdin only. On the leader, ``pg_stat_replication`` joined with
``pg_stat_ssl`` shows every replica over TLS; through app-1's PgBouncer, the
server connection that runs a query is TLS; the rendered files say what each
client checks.

A lab deployed before TLS takes two deploys (components/postgres.py): the
module runs the Postgres and routing deploys once more first (no change on a
lab that is there already), then once again, which must change nothing.
"""

import json
import subprocess
from typing import Any

import pytest

from seawall import names
from seawall.components import pgroute
from seawall.inventory import Topology
from seawall.postgres import drill
from seawall.postgres.remote_writer import role_password
from seawall.postgres.status import cluster, leader_of
from seawall.ssh import run as ssh_run
from tests.lab.conftest import PYINFRA, ROOT, changed_operations, remote_python

DEPLOYS = ("deploys/postgres.py", "deploys/pgroute.py")

# Run on app-1: each attempt from stdin (password included) is one libpq login;
# the answer says whether the session is TLS and which version.
_LOGIN = r"""
import json, sys
import psycopg
results = []
for a in json.loads(sys.stdin.readline()):
    keys = ("host", "hostaddr", "port", "dbname", "user", "password", "sslmode", "sslrootcert")
    params = {k: a[k] for k in keys if a.get(k)}
    try:
        with psycopg.connect(**params, connect_timeout=5) as c:
            row = c.execute(
                "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()"
            ).fetchone()
        results.append({"ok": True, "ssl": row[0], "version": row[1], "error": ""})
    except psycopg.OperationalError as error:
        message = " ".join(str(error).split())[:400]
        results.append({"ok": False, "ssl": None, "version": None, "error": message})
print(json.dumps(results))
"""

# Run on app-1: one query through the local PgBouncer as the drill's role; the
# server connection PgBouncer picked says whether it is TLS.
_PGBOUNCER = r"""
import json, sys
import psycopg
s = json.loads(sys.stdin.readline())
with psycopg.connect(host="127.0.0.1", port=s["port"], dbname=s["dbname"], user=s["user"],
                     password=s["password"], connect_timeout=5, prepare_threshold=None) as c:
    row = c.execute("select ssl, version from pg_stat_ssl where pid = pg_backend_pid()").fetchone()
print(json.dumps({"ssl": row[0], "version": row[1]}))
"""


def _deploy() -> dict[str, list[str]]:
    """Run the Postgres and routing deploys together, as the site runs them; what changed."""
    with drill.data_fault_lock(print):
        done = subprocess.run(
            [PYINFRA, "-y", "--json", "inventories/lab.py", *DEPLOYS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
    return changed_operations(done)


@pytest.fixture(scope="module")
def tls_lab(deployed_lab: Topology) -> Topology:
    healthy, _ = drill.wait_healthy(deployed_lab, 180)
    assert healthy
    # On a lab the site deploy moved from plain TCP, this run requires and verifies.
    _deploy()
    healthy, _ = drill.wait_healthy(deployed_lab, 180)
    assert healthy
    return deployed_lab


def _attempts(topology: Topology, sslmode: str) -> list[dict[str, Any]]:
    app = topology.group("app")[0]
    role = str(app.data["postgres_drill_role"])
    password = role_password(topology, role)
    ca = names.postgres_tls_files(app.data)["ca"]
    return [
        {
            "host": member.address,
            "port": int(member.data["postgres_port"]),
            "dbname": str(app.data["postgres_drill_database"]),
            "user": role,
            "password": password,
            "sslmode": sslmode,
            "sslrootcert": ca if sslmode.startswith("verify") else "",
        }
        for member in topology.group("postgres")
    ]


def _login(topology: Topology, attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    app = topology.group("app")[0]
    results = remote_python(topology, app.name, _LOGIN, attempts, timeout=120)
    assert len(results) == len(attempts)
    for attempt, result in zip(attempts, results, strict=True):
        assert attempt["password"] not in result["error"]
    return list(results)


def test_a_plain_connection_from_an_app_host_meets_the_reject(tls_lab: Topology) -> None:
    attempts = _attempts(tls_lab, "disable")
    for attempt, result in zip(attempts, _login(tls_lab, attempts), strict=True):
        where = f"{attempt['host']}: {result}"
        assert not result["ok"], where
        assert "pg_hba.conf rejects connection" in result["error"], where
        assert "no encryption" in result["error"], where


def test_verify_full_with_the_postgres_ca_logs_in_over_tls(tls_lab: Topology) -> None:
    attempts = _attempts(tls_lab, "verify-full")
    for attempt, result in zip(attempts, _login(tls_lab, attempts), strict=True):
        where = f"{attempt['host']}: {result}"
        assert result["ok"], where
        assert result["ssl"] is True and result["version"] in ("TLSv1.2", "TLSv1.3"), where


def test_verify_full_under_another_members_name_is_refused(tls_lab: Topology) -> None:
    first, second = tls_lab.group("postgres")[:2]
    attempt = _attempts(tls_lab, "verify-full")[0]
    assert attempt["host"] == first.address
    # No DNS in the lab: dial data-1's address while naming data-2.
    (result,) = _login(tls_lab, [dict(attempt, host=second.name, hostaddr=first.address)])
    assert not result["ok"], result
    assert "does not match host name" in result["error"], result


def test_every_replica_streams_over_tls(tls_lab: Topology) -> None:
    leader = leader_of(cluster(tls_lab).members)
    assert leader is not None
    sql = (
        "select r.application_name, s.ssl from pg_stat_replication r "
        "join pg_stat_ssl s on s.pid = r.pid"
    )
    done = ssh_run(tls_lab, leader, f'cd / && runuser -u postgres -- psql -XAtq -c "{sql}"')
    assert done.returncode == 0, done.stderr
    rows = [line.split("|") for line in done.stdout.split()]
    replicas = {m.name for m in tls_lab.group("postgres")} - {leader}
    assert {name for name, _ in rows} == replicas, rows
    assert all(ssl == "t" for _, ssl in rows), rows
    # And they check the leader: verify-full with the CA in what Patroni gives Postgres.
    for replica in replicas:
        shown = ssh_run(
            tls_lab,
            replica,
            "cd / && runuser -u postgres -- psql -XAtq -c 'show primary_conninfo'",
        )
        assert "sslmode=verify-full" in shown.stdout, shown.stdout
        assert "sslrootcert=" in shown.stdout, shown.stdout


def test_pgbouncer_reaches_postgres_over_verified_tls(tls_lab: Topology) -> None:
    app = tls_lab.group("app")[0]
    role = str(app.data["postgres_drill_role"])
    payload = {
        "port": app.data["pgbouncer_port"],
        "dbname": app.data["postgres_drill_database"],
        "user": role,
        "password": role_password(tls_lab, role),
    }
    found = remote_python(tls_lab, app.name, _PGBOUNCER, payload, timeout=60)
    assert found["ssl"] is True and found["version"] in ("TLSv1.2", "TLSv1.3"), found
    ini = ssh_run(tls_lab, app.name, f"cat {pgroute.PGBOUNCER_INI}", check=True).stdout
    assert "server_tls_sslmode = verify-ca" in ini.splitlines()


def test_every_member_serves_and_requires_tls(tls_lab: Topology) -> None:
    sql = (
        "select current_setting('ssl'), current_setting('ssl_min_protocol_version'), "
        "exists (select 1 from pg_hba_file_rules where type = 'hostnossl' "
        "and auth_method = 'reject')"
    )
    for member in tls_lab.group("postgres"):
        done = ssh_run(
            tls_lab, member.name, f'cd / && runuser -u postgres -- psql -XAtq -c "{sql}"'
        )
        assert done.stdout.strip() == "on|TLSv1.2|t", (member.name, done.stdout, done.stderr)
        key = ssh_run(tls_lab, member.name, "stat -c '%U %G %a' /etc/seawall/postgres-tls/host.key")
        assert key.stdout.strip() == "root postgres 640", key.stdout


def test_a_redeploy_changes_nothing(tls_lab: Topology) -> None:
    changed = _deploy()
    assert changed == {}, json.dumps(changed, indent=1)
