"""Least privilege in pg_hba, on the real lab: who may log in to Postgres from an app host.

From an app host, straight to each Postgres member (the address HAProxy passes
on), so the refusal asked about is Postgres's own: a service role logs in to
the databases it owns or reads and meets "no pg_hba.conf entry" on any other,
and Patroni's roles (the superuser first) are refused with the right password.
Passwords reach the host on the probe's stdin only, never on a command line.
Every login is TLS checked with ``verify-full`` against the Postgres CA (app
hosts carry its certificate): pg_hba's ``hostssl`` lines are the ones asked
about, and a plain login would meet the ``hostnossl`` reject instead
(tests/lab/test_postgres_tls.py).
"""

from typing import Any

import pytest

from seawall import names, secrets, settings
from seawall.inventory import Topology
from seawall.postgres import drill
from seawall.postgres.remote_writer import role_password
from tests.lab.conftest import remote_python

NO_HBA_ENTRY = "no pg_hba.conf entry"

# The passwords Patroni's file gives its own roles (components/postgres.py SECRET_NAMES).
PATRONI_SECRETS = {
    "postgres": "postgres_superuser_password",
    "replicator": "postgres_replication_password",
    "rewind_user": "postgres_rewind_password",
}

# Run on the app host: attempts arrive as one JSON line on stdin (passwords
# included); one JSON line out, each attempt's result without its password.
_PROBE = """
import json, sys
import psycopg
results = []
for a in json.loads(sys.stdin.readline()):
    try:
        with psycopg.connect(host=a["host"], port=a["port"], dbname=a["dbname"], user=a["user"],
                             password=a["password"], connect_timeout=5,
                             sslmode="verify-full", sslrootcert=a["sslrootcert"]) as c:
            row = c.execute("select current_user, current_database()").fetchone()
        results.append({"ok": True, "as": list(row), "error": ""})
    except psycopg.OperationalError as error:
        results.append({"ok": False, "as": None, "error": " ".join(str(error).split())[:300]})
print(json.dumps(results))
"""


def probe(topology: Topology, host: str, attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Try each login from ``host`` over TLS (verify-full with the Postgres CA, as the
    ``hostssl`` lines require); return one result per attempt, in order."""
    ca = names.postgres_tls_files(topology.host(host).data)["ca"]
    attempts = [{**attempt, "sslrootcert": ca} for attempt in attempts]
    out = remote_python(topology, host, _PROBE, attempts, timeout=120)
    assert len(out) == len(attempts)
    return list(out)


def _unquoted(name: str) -> str:
    return name.strip('"')


@pytest.fixture(scope="module")
def pg_lab(deployed_lab: Topology) -> Topology:
    healthy, _ = drill.wait_healthy(deployed_lab, 180)
    assert healthy
    return deployed_lab


def members(topology: Topology) -> list[tuple[str, int]]:
    return [(h.address, int(h.data["postgres_port"])) for h in topology.group("postgres")]


def test_a_service_role_reaches_its_databases_and_no_other(pg_lab: Topology) -> None:
    app = pg_lab.group("app")[0]
    logins = [(_unquoted(d), _unquoted(r)) for d, r in names.client_logins(app.data)]
    # Owners and readers both: nothing that worked before the change is refused.
    assert ("trading", "execution") in logins and ("trading", "backend") in logins
    # A service role and another service's database, one it neither owns nor reads.
    owners = settings.setting(app.data, "postgres_databases")
    role, other = next(
        (r, d)
        for r in settings.setting(app.data, "postgres_service_roles")
        for d in sorted(owners)
        if (d, r) not in logins
    )
    passwords = {r: role_password(pg_lab, r) for r in {r for _, r in logins} | {role}}
    attempts, expected = [], []
    for host, port in members(pg_lab):
        for database, login in [*logins, (other, role)]:
            attempts.append(
                {
                    "host": host,
                    "port": port,
                    "dbname": database,
                    "user": login,
                    "password": passwords[login],
                }
            )
            expected.append((host, database, login, (database, login) in logins))
    results = probe(pg_lab, app.name, attempts)
    for (host, database, login, allowed), result in zip(expected, results, strict=True):
        where = f"{login} -> {database} on {host}: {result['error']}"
        if allowed:
            assert result["ok"] and result["as"] == [login, database], where
        else:
            # Refused by pg_hba itself, not only by the database's CONNECT grant.
            assert not result["ok"] and NO_HBA_ENTRY in result["error"], where


def test_patroni_roles_are_refused_from_an_app_host_with_the_right_password(
    pg_lab: Topology,
) -> None:
    app, first = pg_lab.group("app")[0], pg_lab.hosts[0]
    assert set(PATRONI_SECRETS) == set(names.PATRONI_ROLES)
    values = secrets.require(
        list(PATRONI_SECRETS.values()), first.data.get("secrets_file"), first.name
    )
    attempts = [
        {
            "host": host,
            "port": port,
            "dbname": "postgres",
            "user": role,
            "password": values[secret],
        }
        for host, port in members(pg_lab)
        for role, secret in PATRONI_SECRETS.items()
    ]
    results = probe(pg_lab, app.name, attempts)
    for attempt, result in zip(attempts, results, strict=True):
        where = f"{attempt['user']} on {attempt['host']}: {result['error']}"
        assert not result["ok"] and NO_HBA_ENTRY in result["error"], where
        # The refusal names who was refused, and never carries the password.
        assert f'user "{attempt["user"]}"' in result["error"], where
        assert attempt["password"] not in result["error"]
