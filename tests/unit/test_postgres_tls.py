"""Postgres TLS: what the Patroni file, PgBouncer and the probes say, and a real server that
runs with them.

The server test starts Debian's Postgres 15 on loopback with the TLS
parameters and the pg_hba lines the Patroni template renders (the app host's
address replaced by 127.0.0.1, the only one a unit test can connect from), a
key made and owned as the deploy makes it (root:postgres 0640) and a
certificate signed with the CA's own extensions (operations/tls.py): a plain
connection is refused, verify-full with the Postgres CA logs in over TLS, and a
certificate from another CA (the journal's) is not taken for a Postgres server.
"""

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from seawall import inventory
from seawall.components import pgroute, postgres
from seawall.components.templates import render
from seawall.operations import tls as tls_ops
from seawall.verify import roles
from tests.unit.postgres_server import BIN, PostgresServer
from tests.unit.test_postgres_templates import PASSWORDS, addresses

LOOPBACK = "127.0.0.1"


def patroni_yml(
    lab: inventory.Topology,
    name: str = "data-1",
    tls: bool = True,
    enforced: bool = True,
    data: dict[str, Any] | None = None,
    clients: list[str] | None = None,
) -> dict[str, Any]:
    context = postgres.patroni_context(
        name,
        data or lab.host(name).data,
        etcd_members=addresses(lab, "etcd"),
        postgres_peers=addresses(lab, "postgres"),
        clients=clients if clients is not None else addresses(lab, "app"),
        passwords=PASSWORDS,
        tls=tls,
        enforced=enforced,
    )
    parsed = yaml.safe_load(render(postgres.CONCERN, postgres.PATRONI_TEMPLATE, context))
    assert isinstance(parsed, dict)
    return parsed


def test_enforced_patroni_file_turns_tls_on_and_checks_the_ca(lab: inventory.Topology) -> None:
    pg = patroni_yml(lab)["postgresql"]
    tls_dir = lab.host("data-1").data["postgres_tls_dir"]
    assert {k: v for k, v in pg["parameters"].items() if k.startswith("ssl")} == {
        "ssl": "on",
        "ssl_cert_file": f"{tls_dir}/host.pem",
        "ssl_key_file": f"{tls_dir}/host.key",
        "ssl_ca_file": f"{tls_dir}/ca.pem",
        "ssl_min_protocol_version": "TLSv1.2",
    }
    auth = pg["authentication"]
    assert auth["replication"]["sslmode"] == "verify-ca"
    assert auth["rewind"]["sslmode"] == "verify-full"
    assert (
        auth["replication"]["sslrootcert"] == auth["rewind"]["sslrootcert"] == (f"{tls_dir}/ca.pem")
    )
    # The superuser goes through the socket: no TLS setting there.
    assert "sslmode" not in auth["superuser"]


def test_enforced_pg_hba_refuses_plain_tcp_before_any_network_line(
    lab: inventory.Topology,
) -> None:
    hba = patroni_yml(lab)["postgresql"]["pg_hba"]
    # Socket and Patroni's own loopback replication line stay as they were, first.
    assert hba[:2] == [
        "local all all peer",
        "host replication replicator 127.0.0.1/32 scram-sha-256",
    ]
    assert hba[2:4] == [
        "hostnossl all all 0.0.0.0/0 reject",
        "hostnossl replication all 0.0.0.0/0 reject",
    ]
    network = hba[4:]
    peers, clients = addresses(lab, "postgres"), addresses(lab, "app")
    assert len(network) == 2 * len(peers) + len(clients) * len(
        postgres.client_logins(lab.host("data-1").data)
    )
    assert all(line.startswith("hostssl ") and "scram-sha-256" in line for line in network)
    for address in peers + clients:
        assert any(f" {address}/32 " in line for line in network)


def test_transition_turns_tls_on_without_requiring_it(lab: inventory.Topology) -> None:
    # A running cluster's first TLS deploy: ssl on, replication `prefer`, pg_hba unchanged.
    before = patroni_yml(lab, tls=False)["postgresql"]
    during = patroni_yml(lab, enforced=False)["postgresql"]
    assert during["parameters"]["ssl"] == "on"
    assert during["authentication"]["replication"]["sslmode"] == "prefer"
    assert during["authentication"]["rewind"]["sslmode"] == "prefer"
    assert during["pg_hba"] == before["pg_hba"]
    assert not any(line.startswith(("hostssl", "hostnossl")) for line in during["pg_hba"])
    # Without a CA host nothing about TLS is written at all.
    assert not any(key.startswith("ssl") for key in before["parameters"])
    assert "sslmode" not in before["authentication"]["replication"]
    # `enforced` means nothing without TLS on.
    assert patroni_yml(lab, tls=False, enforced=True)["postgresql"] == before


NOT_RUNNING = None
PLAIN = {"ssl": False, "enforced": False}
SERVING = {"ssl": True, "enforced": False}
REQUIRED = {"ssl": True, "enforced": True}


@pytest.mark.parametrize(
    ("states", "every_member", "enforced"),
    [
        # A new cluster: nothing runs, so it starts with TLS required.
        ({"data-1": NOT_RUNNING, "data-2": NOT_RUNNING}, True, True),
        # A running cluster without TLS: this deploy turns it on only.
        ({"data-1": PLAIN, "data-2": PLAIN}, True, False),
        ({"data-1": SERVING, "data-2": PLAIN}, True, False),
        ({"data-1": PLAIN, "data-2": NOT_RUNNING}, True, False),
        # Every member serves TLS: the next deploy requires it.
        ({"data-1": SERVING, "data-2": SERVING}, True, True),
        ({"data-1": SERVING, "data-2": NOT_RUNNING}, True, True),
        # A member outside the run may still speak plain TCP: wait.
        ({"data-1": SERVING}, False, False),
        # Once required anywhere, never a step back (a member down or out of the run).
        ({"data-1": REQUIRED, "data-2": NOT_RUNNING}, True, True),
        ({"data-1": REQUIRED}, False, True),
        ({"data-1": REQUIRED, "data-2": PLAIN}, True, True),
    ],
)
def test_tls_is_required_only_once_every_member_serves_it(
    states: dict[str, dict[str, bool] | None], every_member: bool, enforced: bool
) -> None:
    assert postgres.tls_enforced(states, every_member) is enforced


def pgroute_ini(lab: inventory.Topology, tls: bool) -> str:
    members = [(h.name, h.address) for h in lab.group("postgres")]
    context = pgroute.pgroute_context(lab.host("app-1").data, members, {"probe": "pw"}, tls=tls)
    return render(pgroute.CONCERN, pgroute.PGBOUNCER_INI, context)


def _ini_settings(text: str) -> dict[str, str]:
    pairs = (line.partition("=") for line in text.splitlines() if not line.startswith((";", "[")))
    return {key.strip(): value.strip() for key, _, value in pairs if value}


def test_pgbouncer_checks_every_server_with_the_postgres_ca(lab: inventory.Topology) -> None:
    settings = _ini_settings(pgroute_ini(lab, tls=True))
    ca_file = postgres.tls_files(lab.host("data-1").data)["tls_ca_file"]
    # verify-ca: the address PgBouncer dials is HAProxy's, which no certificate names.
    assert settings["server_tls_sslmode"] == "verify-ca"
    # The same CA file the members trust, at the same path on app hosts.
    assert settings["server_tls_ca_file"] == ca_file
    assert ca_file == f"{lab.host('app-1').data['postgres_tls_dir']}/ca.pem"
    assert "server_tls_sslmode" not in _ini_settings(pgroute_ini(lab, tls=False))


def test_verify_probe_passes_the_ca_to_its_haproxy_leg(lab: inventory.Topology) -> None:
    command = roles.pg_route_probe(lab.host("app-1").data)
    assert command is not None
    assert command.endswith(" " + lab.host("app-1").data["postgres_tls_dir"] + "/ca.pem")


# --- a real server with these settings ------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(directory: Path, name: str) -> None:
    directory.mkdir()
    key = directory / "ca.key"
    _openssl(*tls_ops._GENKEY.split()[1:], str(key), cwd=directory)
    _openssl(
        *("req", "-x509", "-new", "-key", str(key), "-subj", f"/CN={name}", "-days", "30"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "ca.pem"),
        cwd=directory,
    )


def _member_certificate(tls_dir: Path, ca_dir: Path, name: str, address: str) -> None:
    """A key and certificate as the deploy makes them: key root:postgres 0640, the CA's
    own extensions (name and address) on the certificate."""
    tls_dir.mkdir()
    key = tls_dir / tls_ops.KEY
    _openssl(*tls_ops._GENKEY.split()[1:], str(key), cwd=tls_dir)
    shutil.chown(key, "root", "postgres")
    key.chmod(0o640)
    _openssl("req", "-new", "-key", str(key), "-subj", "/CN=x", "-out", "host.csr", cwd=tls_dir)
    (tls_dir / "host.ext").write_text(tls_ops._extensions(name, address))
    _openssl(
        *("x509", "-req", "-in", "host.csr", "-CA", str(ca_dir / "ca.pem")),
        *("-CAkey", str(ca_dir / "ca.key"), "-subj", f"/CN={name}", "-days", "30"),
        *("-extfile", "host.ext", "-out", tls_ops.CERTIFICATE),
        cwd=tls_dir,
    )
    shutil.copy(ca_dir / "ca.pem", tls_dir / tls_ops.CA_CERTIFICATE)


class TlsServer(PostgresServer):
    """The loopback server, started with the Patroni file's TLS parameters and pg_hba."""

    def start_with(self, parameters: dict[str, Any], hba: list[str]) -> "TlsServer":
        self._as_postgres(str(BIN / "initdb"), "-A", "trust", "-U", "postgres", str(self.data))
        hba_file = self.data / "pg_hba.conf"
        # The socket first, as Patroni's `local all all peer`, but trust for the test's setup.
        hba_file.write_text("\n".join(["local all all trust", *hba[1:]]) + "\n")
        shutil.chown(hba_file, "postgres", "postgres")
        options = " ".join(f"-c {key}={value}" for key, value in parameters.items())
        options += (
            f" -c listen_addresses={LOOPBACK} -c port={self.port}"
            f" -c unix_socket_directories={self.directory} -c fsync=off -c shared_buffers=16MB"
        )
        self._as_postgres(
            str(BIN / "pg_ctl"),
            *("-D", str(self.data), "-l", str(self.directory / "server.log")),
            *("-o", options, "-w", "-t", "30", "start"),
        )
        return self

    def sql(self, statement: str) -> None:
        self._as_postgres(
            "psql", "-XAtq", "-h", str(self.directory), "-p", str(self.port), "-U", "postgres",
            "-v", "ON_ERROR_STOP=1", "-c", statement,
        )  # fmt: skip


@pytest.fixture(scope="module")
def tls_server(lab: inventory.Topology) -> Iterator[tuple[TlsServer, Path, Path]]:
    server = TlsServer()
    ca_dir, journal_dir = server.directory / "ca", server.directory / "journal-ca"
    tls_dir = server.directory / "tls"
    try:
        _ca(ca_dir, postgres.CA_NAME)
        _ca(journal_dir, "seawall journal CA")
        _member_certificate(tls_dir, ca_dir, "data-1", LOOPBACK)
        data = dict(lab.host("data-1").data) | {"postgres_tls_dir": str(tls_dir)}
        pg = patroni_yml(lab, data=data, clients=[LOOPBACK])["postgresql"]
        parameters = {k: v for k, v in pg["parameters"].items() if k.startswith("ssl")}
        server.start_with(parameters, pg["pg_hba"])
        server.sql("CREATE ROLE execution LOGIN PASSWORD 'pw-execution'")
        server.sql("CREATE DATABASE trading OWNER execution")
        yield server, tls_dir, journal_dir
    finally:
        server.stop()


def _login(server: TlsServer, **options: Any) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(
        host=LOOPBACK,
        port=server.port,
        dbname="trading",
        user="execution",
        password="pw-execution",
        connect_timeout=5,
        **options,
    )


def test_a_plain_connection_is_refused_by_pg_hba(
    tls_server: tuple[TlsServer, Path, Path],
) -> None:
    server, _, _ = tls_server
    with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
        _login(server, sslmode="disable").close()


def test_verify_full_with_the_postgres_ca_logs_in_over_tls(
    tls_server: tuple[TlsServer, Path, Path],
) -> None:
    server, tls_dir, _ = tls_server
    assert oct((tls_dir / tls_ops.KEY).stat().st_mode & 0o777) == "0o640"
    assert (tls_dir / tls_ops.KEY).stat().st_uid == 0  # root's key, the postgres group reads it
    with _login(server, sslmode="verify-full", sslrootcert=str(tls_dir / "ca.pem")) as conn:
        row = conn.execute(
            "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()"
        ).fetchone()
    assert row is not None and row[0] is True
    assert row[1] in ("TLSv1.2", "TLSv1.3")


def test_another_cas_certificate_is_not_a_postgres_server(
    tls_server: tuple[TlsServer, Path, Path],
) -> None:
    server, _, journal_dir = tls_server
    # A client trusting only the journal's CA refuses this server, even with verify-ca:
    # the two CAs are apart, so neither's certificates pass for the other's.
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _login(server, sslmode="verify-ca", sslrootcert=str(journal_dir / "ca.pem")).close()


def _probe(server: TlsServer, tmp_path: Path, ca: Path) -> list[str]:
    """Run ``seawall verify``'s route probe with both legs pointed at the server."""
    from seawall.refservice.config import ENV_POSTGRES_PASSWORD

    config, secrets = tmp_path / "service.json", tmp_path / "secrets.env"
    postgres_settings = {"host": LOOPBACK, "port": server.port, "dbname": "trading"}
    config.write_text(json.dumps({"postgres": postgres_settings | {"user": "execution"}}))
    secrets.write_text(f"{ENV_POSTGRES_PASSWORD}=pw-execution\n")
    args = [str(config), str(secrets), ENV_POSTGRES_PASSWORD, str(server.port), str(ca)]
    done = subprocess.run(
        [sys.executable, "-c", roles._PG_ROUTE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def test_verify_probe_logs_in_through_haproxy_with_tls_only_to_a_postgres_server(
    tls_server: tuple[TlsServer, Path, Path], tmp_path: Path
) -> None:
    server, tls_dir, journal_dir = tls_server
    haproxy = [line for line in _probe(server, tmp_path, tls_dir / "ca.pem") if "haproxy" in line]
    assert haproxy == ["haproxy ok 127.0.0.1 primary"]
    # A server the CA did not sign fails the probe: the check is real.
    (line,) = [
        line for line in _probe(server, tmp_path, journal_dir / "ca.pem") if "haproxy" in line
    ]
    assert line.startswith("haproxy error OperationalError") and "certificate verify failed" in line
