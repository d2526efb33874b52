"""Role passwords against a real PostgreSQL 15: the verifier goes in on psql's stdin and
comes back only as a digest that still tells a right password from a wrong one."""

import os
import subprocess
from typing import Any

from pyinfra.api import HiddenValue, StringCommand
from pyinfra.connectors.util import write_stdin
from pyinfra.context import ctx_host

from seawall.facts.postgres import PostgresRolesAndDatabases
from seawall.operations import postgres as ops
from tests.unit.postgres_server import PostgresServer, postgres_server  # noqa: F401

PASSWORD = "pw-never-on-a-command-line"


class _Leader:
    """The Patroni leader, whose roles and databases are read from the real server."""

    name = "data-1"

    def __init__(self, server: PostgresServer) -> None:
        self.server = server

    def get_fact(self, fact: Any, **kwargs: Any) -> Any:
        if fact.__name__ == "PatroniCluster":
            return [{"Member": "data-1", "Role": "Leader", "State": "running", "TL": 1}]
        lines = _sh(self.server, fact().command()).stdout.splitlines()
        return fact().process(lines) if lines else fact.default()

    def noop(self, description: str) -> None:
        self.noop_description = description


def _sh(server: PostgresServer, command: Any) -> subprocess.CompletedProcess[str]:
    """Run a command as pyinfra would on the host (stdin included), against ``server``."""
    text = command.get_raw_value() if isinstance(command, StringCommand) else str(command)
    env = {**os.environ, "PGHOST": str(server.directory), "PGPORT": str(server.port)}
    process = subprocess.Popen(
        ["sh", "-c", text], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False, env=env
    )
    assert process.stdin is not None and process.stdout is not None
    stdin = (
        command.connector_arguments.get("_stdin") if isinstance(command, StringCommand) else None
    )
    if stdin:
        write_stdin(stdin, process.stdin)
    process.stdin.close()
    out = process.stdout.read().decode()
    assert process.wait() == 0, text
    return subprocess.CompletedProcess(text, 0, out, "")


def _service_roles(server: PostgresServer, password: str) -> list[Any]:
    leader = _Leader(server)
    with ctx_host.use(leader):
        return list(
            ops.service_roles._inner(
                config="/etc/patroni/15-main.yml",
                passwords={"secret_test_role": HiddenValue(password)},
                databases={},
                readers={},
            )
        )


def test_a_role_password_set_through_stdin_is_recognised_by_its_digest(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    with postgres_server.connect(autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS secret_test_role")
    (create,) = _service_roles(postgres_server, PASSWORD)
    assert "SCRAM" not in create.get_raw_value() and PASSWORD not in create.get_raw_value()
    _sh(postgres_server, create)

    state = _Leader(postgres_server).get_fact(PostgresRolesAndDatabases)
    digest = state["roles"]["secret_test_role"]
    with postgres_server.connect() as conn:
        stored = conn.execute(
            "select rolpassword from pg_authid where rolname = 'secret_test_role'"
        ).fetchone()
    assert stored is not None
    verifier = str(stored[0])
    assert verifier.startswith("SCRAM-SHA-256$")
    # The fact holds neither the verifier nor its keys: salt and iterations, then a digest.
    assert verifier not in digest and verifier.split("$")[2] not in digest
    assert ops.verifier_matches(digest, PASSWORD)
    assert not ops.verifier_matches(digest, PASSWORD + "x")
    # In shape now: the second run changes nothing; a new password is set again.
    assert _service_roles(postgres_server, PASSWORD) == []
    (alter,) = _service_roles(postgres_server, PASSWORD + "-rotated")
    _sh(postgres_server, alter)
    assert _service_roles(postgres_server, PASSWORD + "-rotated") == []


def test_a_role_without_a_scram_password_never_matches() -> None:
    for stored in ("", "md5abc", "SCRAM-SHA-256$garbage", "SCRAM-SHA-256$4096:!!$ab"):
        assert not ops.verifier_matches(stored, PASSWORD)
