"""Postgres TLS on a real PostgreSQL 15 (Debian's, on loopback), with what the deploy makes.

The CA, the member's key and its certificate come from seawall's own TLS
operations run for real (OpenSSL 3.0, as ``test_logging_tls``), the member
named ``data-1`` at 127.0.0.1. Postgres runs with the ``ssl`` settings and the
pg_hba lines the Patroni template renders (peers and app hosts at 127.0.0.1),
written as Patroni writes them: postgresql.conf's settings and pg_hba.conf,
changed by a reload.

- a member that starts with TLS required: a TLS login checked with
  ``verify-full`` (by its address and by ``localhost``, as Patroni's own
  replication check dials it) and libpq's default ``prefer`` log in; a plain
  one meets pg_hba's reject, saying why; replication likewise; dialled at
  another address (HAProxy's, for PgBouncer) only ``verify-ca`` passes;
- a member running without TLS takes it by reloads, never a restart: TLS
  served with plain TCP still admitted, then required;
- ``PostgresTls``'s own command reads each stage right, and the deploy's
  wait for TLS after a reload returns at once on a member that serves it.
"""

import grp
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from seawall import inventory
from seawall.components import postgres
from seawall.components.postgres import TlsPlan
from seawall.components.templates import render
from seawall.facts.postgres import PostgresTls
from seawall.operations import tls
from tests.unit.postgres_server import PostgresServer, _free_port
from tests.unit.test_logging_tls import Inventory, LocalHost, run

ADDRESS, OTHER = "127.0.0.1", "127.0.0.2"
PASSWORDS = {"probe": "probe-pw", "replicator": "replicator-pw"}


@pytest.fixture
def material() -> Iterator[dict[str, Any]]:
    """The Postgres CA (on "ops-1") and data-1's key and certificate, made by the operations."""
    root = Path(tempfile.mkdtemp(prefix="seawall-pgtls-"))
    # Postgres (user postgres) reads the member's files: every directory above them is 0755.
    root.chmod(0o755)
    hosts = {name: LocalHost(name, root / name) for name in ("ops-1", "data-1")}
    for one in hosts.values():
        one.root.mkdir(mode=0o755)
    lab = {"hosts": hosts, "inventory": Inventory(hosts)}
    ca_dir, tls_dir = str(root / "ops-1" / "ca"), str(root / "data-1" / "tls")
    run(lab, "ops-1", tls.tls_ca, directory=ca_dir, common_name="seawall postgres CA", days=3650)
    run(lab, "data-1", tls.tls_key, directory=tls_dir, common_name="data-1", group="postgres")
    run(
        lab,
        "ops-1",
        tls.tls_signed,
        directory=ca_dir,
        peers=[("data-1", f"{tls_dir}/host.csr", ADDRESS)],
        days=397,
        renew_days=30,
        names=[postgres.LOCAL_NAME],
        extended_key_usage=postgres.SERVER_USAGE,
    )
    # Before its certificate is installed, the member's check stops it.
    assert run_check(lab, tls_dir) is False
    run(
        lab,
        "data-1",
        tls.tls_certificate,
        directory=tls_dir,
        ca_host="ops-1",
        ca_directory=ca_dir,
        renew_days=30,
    )
    assert run_check(lab, tls_dir) is True
    try:
        yield {"root": root, "tls_dir": tls_dir, "ca": f"{tls_dir}/ca.pem"}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_check(lab: dict[str, Any], tls_dir: str) -> bool:
    """Whether ``tls_ready`` lets data-1 go on (it yields a failing command otherwise)."""
    from pyinfra.context import ctx_host, ctx_inventory

    with ctx_host.use(lab["hosts"]["data-1"]), ctx_inventory.use(lab["inventory"]):
        commands = list(tls.tls_ready._inner(directory=tls_dir, key_group="postgres"))
    if not commands:
        return True
    result = subprocess.run(["sh", "-c", str(commands[0])], capture_output=True, text=True)
    assert result.returncode == 1 and "TLS cannot be turned on" in result.stderr
    return False


def rendered(lab: inventory.Topology, material: dict[str, Any], plan: TlsPlan) -> dict[str, Any]:
    """data-1's Patroni ``postgresql`` section: peers and app hosts all at 127.0.0.1."""
    data = dict(lab.host("data-1").data)
    data.update(private_address=ADDRESS, postgres_tls_dir=material["tls_dir"])
    context = postgres.patroni_context(
        "data-1",
        data,
        etcd_members=[],
        postgres_peers=[ADDRESS],
        clients=[ADDRESS],
        passwords={secret: "unused" for secret in postgres.SECRET_NAMES},
        archive=False,
        tls=plan,
    )
    text = render("postgres", postgres.PATRONI_TEMPLATE, context)
    Path(material["root"], "patroni.yml").write_text(text)
    section: dict[str, Any] = yaml.safe_load(text)["postgresql"]
    return section


class Member:
    """A Postgres whose settings and pg_hba are rewritten and reloaded, as Patroni does."""

    def __init__(self, lab: inventory.Topology, material: dict[str, Any]) -> None:
        self.lab, self.material = lab, material
        self.server = PostgresServer()
        self.tls_conf = self.server.directory / "tls.conf"
        self.hba = self.server.directory / "pg_hba.conf"

    def write(self, plan: TlsPlan) -> None:
        section = rendered(self.lab, self.material, plan)
        ssl = {k: v for k, v in section["parameters"].items() if k.startswith("ssl")}
        self.tls_conf.write_text("".join(f"{key} = '{value}'\n" for key, value in ssl.items()))
        self.hba.write_text("".join(f"{line}\n" for line in section["pg_hba"]))
        for path in (self.tls_conf, self.hba):
            shutil.chown(path, "postgres", "postgres")

    def start(self, plan: TlsPlan) -> "Member":
        def prepare(server: PostgresServer) -> None:
            with open(server.data / "postgresql.conf", "a") as conf:
                conf.write(f"include_if_exists = '{self.tls_conf}'\n")

        self.write(plan)
        self.server.start(
            options=f"-c hba_file={self.hba}", listen=f"{ADDRESS},{OTHER}", prepare=prepare
        )
        self.sql(
            f"CREATE ROLE probe LOGIN PASSWORD '{PASSWORDS['probe']}'",
            f"CREATE ROLE replicator LOGIN REPLICATION PASSWORD '{PASSWORDS['replicator']}'",
            "CREATE DATABASE probe OWNER probe",
        )
        return self

    def sql(self, *statements: str) -> str:
        """Run statements over the socket as postgres (pg_hba's `local all all peer`)."""
        command = ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1"]
        command += ["-h", str(self.server.directory), "-p", str(self.server.port), "-d", "postgres"]
        for statement in statements:
            command += ["-c", statement]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def reload(self, plan: TlsPlan) -> None:
        self.write(plan)
        self.sql("SELECT pg_reload_conf()")

    def login(self, host: str = ADDRESS, **tls_options: str) -> tuple[bool, str]:
        """Log in as the probe service; return (TLS, protocol), or raise OperationalError."""
        with psycopg.connect(
            host=host,
            port=self.server.port,
            dbname="probe",
            user="probe",
            password=PASSWORDS["probe"],
            connect_timeout=5,
            **tls_options,
        ) as conn:
            row = conn.execute(
                "SELECT ssl, coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
        assert row is not None
        return bool(row[0]), str(row[1])

    def replicate(self, host: str, **tls_options: str) -> str:
        """A replication connection as Patroni's timeline check makes it; IDENTIFY_SYSTEM."""
        with psycopg.connect(
            host=host,
            port=self.server.port,
            user="replicator",
            password=PASSWORDS["replicator"],
            replication="true",
            connect_timeout=5,
            autocommit=True,
            **tls_options,
        ) as conn:
            # Replication connections take the simple query protocol only.
            result = conn.pgconn.exec_(b"IDENTIFY_SYSTEM")
            assert result.status == psycopg.pq.ExecStatus.TUPLES_OK, result.error_message
            return bytes(result.get_value(0, 0) or b"").decode()

    def fact(self) -> dict[str, Any]:
        tls_dir = self.material["tls_dir"]
        command = PostgresTls().command(
            key=f"{tls_dir}/host.key",
            cert=f"{tls_dir}/host.pem",
            ca=f"{tls_dir}/ca.pem",
            address=ADDRESS,
            port=self.server.port,
            config=str(Path(self.material["root"], "patroni.yml")),
            data_dir=str(self.server.data),
        )
        return _fact(command)

    def started_at(self) -> str:
        return self.sql("SELECT pg_postmaster_start_time()")


@pytest.fixture
def member(lab: inventory.Topology, material: dict[str, Any]) -> Iterator[Member]:
    assert "postgres" in [g.gr_name for g in grp.getgrall()]
    one = Member(lab, material)
    try:
        yield one
    finally:
        one.server.stop()


REQUIRED = TlsPlan(on=True, required=True, verify=True)


def test_a_member_started_with_tls_required_admits_tls_only(member: Member) -> None:
    member.start(REQUIRED)
    ca = member.material["ca"]
    assert member.fact() == {"files": True, "serving": "tls", "requires": True, "verifies": True}
    # verify-full by its address and by `localhost`: both are in the certificate.
    ssl, version = member.login(sslmode="verify-full", sslrootcert=ca)
    assert ssl and version in ("TLSv1.2", "TLSv1.3")
    assert member.login(host="localhost", sslmode="verify-full", sslrootcert=ca)[0]
    # libpq's default, prefer, takes the TLS offered.
    assert member.login()[0]
    assert member.sql("SHOW ssl_min_protocol_version") == "TLSv1.2"
    # Plain TCP meets the reject, which says why.
    with pytest.raises(psycopg.OperationalError) as plain:
        member.login(sslmode="disable")
    assert "pg_hba.conf rejects connection" in str(plain.value)
    assert "no encryption" in str(plain.value)
    # Replication as Patroni's own check makes it (`localhost`, verify-full), and not plain.
    system = member.replicate("localhost", sslmode="verify-full", sslrootcert=ca)
    assert system.isdigit()
    with pytest.raises(psycopg.OperationalError, match="rejects replication connection"):
        member.replicate(ADDRESS, sslmode="disable")
    # Dialled at another address (HAProxy's for PgBouncer), the name cannot match:
    # verify-ca is what such a client can check, and it holds.
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        member.login(host=OTHER, sslmode="verify-full", sslrootcert=ca)
    assert member.login(host=OTHER, sslmode="verify-ca", sslrootcert=ca)[0]
    # The deploy's wait after a reload: at once, on a member that serves TLS.
    wait = postgres.tls_wait(ADDRESS, member.server.port, ca)
    started = time.monotonic()
    assert subprocess.run(["sh", "-c", wait], timeout=60).returncode == 0
    assert time.monotonic() - started < 5


def _until(member: Member, serving: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        found = member.fact()
        if found["serving"] == serving or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_a_running_plain_member_takes_tls_by_reloads_never_refusing_a_prefer_client(
    member: Member,
) -> None:
    member.start(TlsPlan())
    started = member.started_at()
    assert member.fact() == {
        "files": True,
        "serving": "plain",
        "requires": False,
        "verifies": False,
    }
    assert member.login() == (False, "")
    # Deploy 1: TLS served; plain TCP still admitted (a PgBouncer at its default).
    member.reload(TlsPlan(on=True))
    assert _until(member, "tls")["serving"] == "tls"
    assert member.login()[0] is True
    assert member.login(sslmode="disable") == (False, "")
    # Deploy 2: required. prefer and verify-full log in; plain is refused.
    member.reload(REQUIRED)
    deadline = time.monotonic() + 15
    while not member.fact()["requires"] or _refuses_plain(member) is False:
        assert time.monotonic() < deadline, "pg_hba's reject did not take effect"
        time.sleep(0.2)
    assert member.login()[0] is True
    assert member.login(sslmode="verify-full", sslrootcert=member.material["ca"])[0] is True
    # Reloads only: the same postmaster throughout.
    assert member.started_at() == started
    assert os.path.exists(member.tls_conf)


def _refuses_plain(member: Member) -> bool:
    try:
        member.login(sslmode="disable")
    except psycopg.OperationalError as error:
        return "rejects connection" in str(error)
    return False


def _fact(command: str) -> dict[str, Any]:
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout
    return PostgresTls().process(output.splitlines())


def test_a_member_where_nothing_answers_is_new_only_without_a_running_postmaster(
    tmp_path: Path,
) -> None:
    port = _free_port()  # nothing listens there
    kwargs = {
        "key": str(tmp_path / "host.key"),
        "cert": str(tmp_path / "host.pem"),
        "ca": str(tmp_path / "ca.pem"),
        "address": ADDRESS,
        "port": port,
        "config": str(tmp_path / "patroni.yml"),
        "data_dir": str(tmp_path / "data"),
    }
    new = {"files": False, "serving": None, "requires": False, "verifies": False}
    assert _fact(PostgresTls().command(**kwargs)) == new
    # A postmaster's pid file, no answer: running (or crashed), never taken for new.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "postmaster.pid").write_text("1\n")
    assert _fact(PostgresTls().command(**kwargs))["serving"] == "plain"
