"""A real PostgreSQL 15 server on loopback for unit tests (Debian's postgresql-15 binaries).

initdb refuses root, so the cluster belongs to the `postgres` user; it lives in
its own temporary directory, listens on a free 127.0.0.1 port, and is stopped
by the test session that started it.
"""

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        # bootstrap.sh installs postgresql-15; the suite runs as root (LXC). A
        # missing one fails here, it is never a skip counted as a pass.
        assert (BIN / "initdb").exists(), "postgresql-15 is not installed: run ./bootstrap.sh"
        assert os.geteuid() == 0, "the loopback Postgres runs as the postgres user: needs root"
        self.directory = Path(tempfile.mkdtemp(prefix="seawall-pg-"))
        shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.port = _free_port()

    def _as_postgres(self, *command: str) -> None:
        # Output to a file, never a pipe: the server pg_ctl starts would hold
        # the pipe open, and waiting for its end would wait for the server.
        with open(self.directory / "commands.log", "ab") as log:
            subprocess.run(
                ["runuser", "-u", "postgres", "--", *command],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                timeout=60,
            )

    def start(
        self,
        options: str = "",
        listen: str = "127.0.0.1",
        prepare: Callable[["PostgresServer"], None] | None = None,
    ) -> "PostgresServer":
        """initdb, then ``prepare`` (files in the new cluster), then start with ``options``."""
        self._as_postgres(str(BIN / "initdb"), "-A", "trust", "-U", "postgres", str(self.data))
        if prepare is not None:
            prepare(self)
        options = (
            f"-c listen_addresses={listen} -c port={self.port} "
            f"-c unix_socket_directories={self.directory} -c fsync=off "
            f"-c shared_buffers=16MB -c max_connections=40 {options}"
        ).strip()
        self._as_postgres(
            str(BIN / "pg_ctl"),
            *("-D", str(self.data), "-l", str(self.directory / "server.log")),
            *("-o", options, "-w", "-t", "30", "start"),
        )
        return self

    def connect(self, **options: object) -> psycopg.Connection[tuple[object, ...]]:
        # A statement stuck on a lock fails the test instead of hanging the run.
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname="postgres",
            options="-c statement_timeout=20s",
            **options,
        )

    def stop(self) -> None:
        try:
            self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """The server with the reference service's tables dropped (a fresh schema per test)."""
    with postgres_server.connect(autocommit=True) as conn:
        conn.execute(
            "DROP TABLE IF EXISTS refservice_orders, refservice_outbox, refservice_outbox_relay"
        )
        conn.execute("DROP SEQUENCE IF EXISTS refservice_outbox_seq")
    yield postgres_server
