"""Postgres TLS on the real lab: plain TCP refused, verify-full logs in, replication and
PgBouncer's server connections encrypted.

From app-1, straight to each Postgres member with libpq (psycopg: app hosts
carry no psql): ``sslmode=disable`` meets pg_hba's ``hostnossl ... reject``, and
``sslmode=verify-full`` with the Postgres CA that the deploy installed on app-1
logs in as the drill's service role. The password reaches app-1 on the probe's
stdin and libpq through a 0600 passfile in a 0700 directory, never a command
line. On the leader, ``pg_stat_replication`` joined with ``pg_stat_ssl`` shows
every replication connection over TLS; through app-1's PgBouncer, the server
connection that runs a service's query is TLS too.

A lab that ran without TLS takes two deploys (the first turns TLS on, the
second requires it: components/postgres.py), so the module deploys Postgres
once more after the site deploy: that run requires TLS on a lab that only
served it, and must break no replica doing so (the replication test runs after).
"""

from typing import Any

import pytest

from seawall import settings
from seawall.inventory import Topology
from seawall.postgres import drill
from seawall.postgres.remote_writer import role_password
from seawall.postgres.status import cluster, leader_of
from seawall.ssh import run as ssh_run
from tests.lab.conftest import changed_operations, remote_python, run_deploy

# Run on app-1: each attempt from stdin (password included) is one libpq login
# (psycopg; app hosts carry no psql) whose password is read from a 0600 passfile,
# never given on a command line or as a connection parameter.
_LOGIN = r"""
import json, os, sys, tempfile
import psycopg
results = []
for a in json.loads(sys.stdin.readline()):
    with tempfile.TemporaryDirectory() as scratch:
        passfile = os.path.join(scratch, "pgpass")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"{a['host']}:{a['port']}:{a['dbname']}:{a['user']}:{a['password']}\n")
        keys = ("host", "hostaddr", "port", "dbname", "user", "sslmode", "sslrootcert")
        params = {k: a[k] for k in keys if a.get(k)}
        try:
            with psycopg.connect(**params, passfile=passfile, connect_timeout=5) as c:
                row = c.execute(
                    "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()"
                ).fetchone()
            results.append({"ok": True, "ssl": row[0], "version": row[1], "error": ""})
        except psycopg.OperationalError as error:
            message = " ".join(str(error).split())[:400]
            results.append({"ok": False, "ssl": None, "version": None, "error": message})
print(json.dumps(results))
"""


# Run on app-1: one query through the local PgBouncer as a service role; the
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


@pytest.fixture(scope="module")
def pg_lab(deployed_lab: Topology) -> Topology:
    healthy, _ = drill.wait_healthy(deployed_lab, 180)
    assert healthy
    # Required now if the site deploy only turned TLS on (changes nothing otherwise).
    changed_operations(run_deploy("deploys/postgres.py", timeout=600))
    healthy, _ = drill.wait_healthy(deployed_lab, 180)
    assert healthy
    return deployed_lab


def _attempts(topology: Topology, sslmode: str) -> list[dict[str, Any]]:
    app = topology.group("app")[0]
    role = str(app.data["postgres_drill_role"])
    password = role_password(topology, role)
    ca = f"{settings.setting(app.data, 'postgres_tls_dir')}/ca.pem"
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
        # Whatever happened, the password shows nowhere in what came back.
        assert attempt["password"] not in result["error"]
    return list(results)


def test_a_plain_connection_from_an_app_host_is_refused(pg_lab: Topology) -> None:
    attempts = _attempts(pg_lab, "disable")
    for attempt, result in zip(attempts, _login(pg_lab, attempts), strict=True):
        where = f"{attempt['host']}: {result}"
        assert not result["ok"], where
        # pg_hba's own reject, not a missing line or a bad password.
        assert "pg_hba.conf rejects connection" in result["error"], where
        assert "no encryption" in result["error"], where


def test_verify_full_with_the_postgres_ca_logs_in_over_tls(pg_lab: Topology) -> None:
    attempts = _attempts(pg_lab, "verify-full")
    for attempt, result in zip(attempts, _login(pg_lab, attempts), strict=True):
        where = f"{attempt['host']}: {result}"
        assert result["ok"], where
        assert result["ssl"] is True and result["version"] in ("TLSv1.2", "TLSv1.3"), where


def test_verify_full_by_another_name_is_refused(pg_lab: Topology) -> None:
    # The certificate names the member's inventory name and private address only:
    # reaching data-1's address while expecting data-2's name fails the check.
    first, second = pg_lab.group("postgres")[:2]
    attempt = _attempts(pg_lab, "verify-full")[0]
    assert attempt["host"] == first.address
    # No DNS in the lab: psql dials hostaddr and checks the certificate against host.
    wrong = dict(attempt, host=second.name, hostaddr=first.address)
    (result,) = _login(pg_lab, [wrong])
    assert not result["ok"], result
    assert "does not match host name" in result["error"], result


def test_every_replication_connection_is_tls(pg_lab: Topology) -> None:
    leader = leader_of(cluster(pg_lab).members)
    assert leader is not None
    sql = (
        "select r.application_name, s.ssl from pg_stat_replication r "
        "join pg_stat_ssl s on s.pid = r.pid"
    )
    done = ssh_run(pg_lab, leader, f'cd / && runuser -u postgres -- psql -XAtq -c "{sql}"')
    assert done.returncode == 0, done.stderr
    rows = [line.split("|") for line in done.stdout.split()]
    replicas = {m.name for m in pg_lab.group("postgres")} - {leader}
    assert {name for name, _ in rows} == replicas, rows
    assert all(ssl == "t" for _, ssl in rows), rows


def test_pgbouncer_reaches_postgres_over_tls(pg_lab: Topology) -> None:
    app = pg_lab.group("app")[0]
    role = str(app.data["postgres_drill_role"])
    payload = {
        "port": app.data["pgbouncer_port"],
        "dbname": app.data["postgres_drill_database"],
        "user": role,
        "password": role_password(pg_lab, role),
    }
    found = remote_python(pg_lab, app.name, _PGBOUNCER, payload, timeout=60)
    assert found["ssl"] is True, found
    assert found["version"] in ("TLSv1.2", "TLSv1.3"), found


def test_every_member_serves_and_requires_tls(pg_lab: Topology) -> None:
    from seawall.facts.postgres import TLS_QUERY

    for member in pg_lab.group("postgres"):
        done = ssh_run(
            pg_lab, member.name, f'cd / && runuser -u postgres -- psql -XAtq -c "{TLS_QUERY}"'
        )
        assert done.stdout.strip() == "on|t", (member.name, done.stdout, done.stderr)
