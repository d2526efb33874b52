"""etcd with client-certificate TLS: the member file at each step of the move, the
step logic, Patroni's etcd3 section, and the two probes run against real servers.

The controller has no etcd-server: that etcd refuses a client without a
certificate is checked in the lab (tests/lab/test_etcd_tls.py).
"""

import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from seawall import inventory
from seawall.components import common, etcd, postgres
from seawall.components.templates import render
from seawall.facts.etcd import EtcdHealth, EtcdServesTls
from tests.unit.test_common_templates import Call, Recorder

PASSWORDS = {name: f"secret-{name}" for name in postgres.SECRET_NAMES}


def member_file(lab: inventory.Topology, name: str, stage: int) -> dict[str, str]:
    members = [(host.name, host.address) for host in lab.group("etcd")]
    context = etcd.etcd_context(name, lab.host(name).data, members, stage)
    text = render("etcd", etcd.DEFAULTS_FILE, context)
    variables = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            variables[key] = value.strip('"')
    return variables


def test_a_member_on_tls_serves_https_only_and_asks_every_client_and_peer_for_a_certificate(
    lab: inventory.Topology,
) -> None:
    member = lab.host("data-2")
    data = member.data
    tls_dir = data["etcd_tls_dir"]
    env = member_file(lab, "data-2", etcd.TLS_STAGE)
    client, peer = data["etcd_client_port"], data["etcd_peer_port"]
    assert env["ETCD_LISTEN_CLIENT_URLS"] == (
        f"https://{member.address}:{client},https://127.0.0.1:{client}"
    )
    assert env["ETCD_ADVERTISE_CLIENT_URLS"] == f"https://{member.address}:{client}"
    assert env["ETCD_LISTEN_PEER_URLS"] == f"https://{member.address}:{peer}"
    assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == f"https://{member.address}:{peer}"
    cluster = ",".join(f"{m.name}=https://{m.address}:{peer}" for m in lab.group("etcd"))
    assert env["ETCD_INITIAL_CLUSTER"] == cluster
    assert env["ETCD_CLIENT_CERT_AUTH"] == "true"
    assert env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert env["ETCD_TRUSTED_CA_FILE"] == env["ETCD_PEER_TRUSTED_CA_FILE"] == f"{tls_dir}/ca.pem"
    assert env["ETCD_CERT_FILE"] == env["ETCD_PEER_CERT_FILE"] == f"{tls_dir}/host.pem"
    assert env["ETCD_KEY_FILE"] == env["ETCD_PEER_KEY_FILE"] == f"{tls_dir}/host.key"
    # Only /health and /metrics go without a certificate, on their own port.
    metrics = data["etcd_metrics_port"]
    assert env["ETCD_LISTEN_METRICS_URLS"] == (
        f"http://{member.address}:{metrics},http://127.0.0.1:{metrics}"
    )
    assert not any("http://" in value for key, value in env.items() if "METRICS" not in key)
    assert env["SEAWALL_ETCD_TLS_STAGE"] == "3"


def test_each_step_of_the_move_keeps_what_the_members_not_yet_moved_need(
    lab: inventory.Topology,
) -> None:
    member = lab.host("data-1")
    client, peer = member.data["etcd_client_port"], member.data["etcd_peer_port"]
    plain = member_file(lab, "data-1", 0)
    assert plain["ETCD_LISTEN_CLIENT_URLS"] == (
        f"http://{member.address}:{client},http://127.0.0.1:{client}"
    )
    assert "ETCD_CLIENT_CERT_AUTH" not in plain and "ETCD_LISTEN_METRICS_URLS" not in plain
    # 1: https beside plain http on the client port (Patroni still on http),
    # peers plain but holding a certificate, none asked of them yet.
    first = member_file(lab, "data-1", 1)
    urls = first["ETCD_LISTEN_CLIENT_URLS"].split(",")
    assert f"https://{member.address}:{client}" in urls
    assert f"http://{member.address}:{client}" in urls
    assert first["ETCD_LISTEN_PEER_URLS"] == f"http://{member.address}:{peer}"
    assert "ETCD_PEER_CERT_FILE" in first and "ETCD_PEER_CLIENT_CERT_AUTH" not in first
    assert "ETCD_LISTEN_METRICS_URLS" in first
    # 2: peers on https, each asked for its certificate; clients as in 1.
    second = member_file(lab, "data-1", 2)
    assert second["ETCD_LISTEN_PEER_URLS"] == f"https://{member.address}:{peer}"
    assert second["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert second["ETCD_LISTEN_CLIENT_URLS"] == first["ETCD_LISTEN_CLIENT_URLS"]


@pytest.mark.parametrize(
    ("own", "members", "pending", "patroni_https", "fresh", "expected"),
    [
        # A new cluster starts on TLS; a member on TLS never goes back.
        (0, [None, None, None], False, False, True, 3),
        (3, [3, 2, 2], True, False, False, 3),
        # One step past the lowest member.
        (0, [0, 0, 0], False, False, False, 1),
        (1, [1, 1, 1], False, False, False, 2),
        (1, [1, 0, 1], False, False, False, 1),
        # Plain http leaves the client port only once Patroni is on https.
        (2, [2, 2, 2], False, False, False, 2),
        (2, [2, 2, 2], False, True, False, 3),
        (2, [3, 2, 3], False, True, False, 3),
        # No step while a member is out of the run or a restart is pending.
        (1, [1, None, 1], False, False, False, 1),
        (1, [1, 1, 1], True, False, False, 1),
    ],
)
def test_a_member_moves_one_step_past_the_lowest_and_never_back(
    own: int,
    members: list[int | None],
    pending: bool,
    patroni_https: bool,
    fresh: bool,
    expected: int,
) -> None:
    assert etcd.tls_stage(own, members, pending, patroni_https, fresh) == expected


def test_a_member_without_its_certificate_stays_where_it_is() -> None:
    """Its CA's host out of the run and no certificate here: etcd would not start on TLS."""
    assert etcd.tls_stage(0, [0, 0, 0], False, False, False, certificates=False) == 0
    assert etcd.tls_stage(0, [], False, False, True, certificates=False) == 0
    assert etcd.tls_stage(2, [2, 2, 2], False, True, False, certificates=False) == 2
    assert etcd.tls_stage(3, [3, 3, 3], False, True, False, certificates=False) == 3


def test_a_file_without_a_step_is_plain_http() -> None:
    assert etcd.stage_of(None) == 0
    assert etcd.stage_of([]) == 0
    assert etcd.stage_of(['SEAWALL_ETCD_TLS_STAGE="2"']) == 2


def test_patroni_reaches_etcd_over_https_with_its_own_certificate(
    lab: inventory.Topology,
) -> None:
    host = lab.host("data-1")
    context = postgres.patroni_context(
        "data-1",
        host.data,
        etcd_members=[m.address for m in lab.group("etcd")],
        postgres_peers=[m.address for m in lab.group("postgres")],
        clients=[m.address for m in lab.group("app")],
        passwords=PASSWORDS,
    )
    config = yaml.safe_load(render("postgres", postgres.PATRONI_TEMPLATE, context))
    tls_dir = host.data["etcd_client_tls_dir"]
    assert config["etcd3"]["protocol"] == "https"
    assert config["etcd3"]["cacert"] == f"{tls_dir}/ca.pem"
    assert config["etcd3"]["cert"] == f"{tls_dir}/host.pem"
    assert config["etcd3"]["key"] == f"{tls_dir}/host.key"
    # Not the member's key (group etcd): Patroni's own, group postgres.
    assert tls_dir != host.data["etcd_tls_dir"]
    plain = postgres.patroni_context(
        "data-1",
        host.data,
        etcd_members=[m.address for m in lab.group("etcd")],
        postgres_peers=[],
        clients=[],
        passwords=PASSWORDS,
        etcd_tls=False,
    )
    assert (
        "protocol"
        not in yaml.safe_load(render("postgres", postgres.PATRONI_TEMPLATE, plain))["etcd3"]
    )


# --- the probes, against real servers on loopback ----------------------------------------


def run_fact(fact: Any, **kwargs: Any) -> Any:
    command = fact.command(**kwargs)
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True
    )
    return fact.process(result.stdout.splitlines())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Health(http.server.BaseHTTPRequestHandler):
    body = b'{"health":"true","reason":""}'

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


class _Sick(_Health):
    body = b'{"health":"false","reason":"RAFT NO LEADER"}'


def _serve(server: Any) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def healthy() -> Iterator[int]:
    yield from _serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health))


@pytest.fixture
def sick() -> Iterator[int]:
    yield from _serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sick))


def test_health_is_asked_at_the_metrics_port_then_at_the_client_port(
    healthy: int, sick: int
) -> None:
    closed = free_port()
    on_metrics, moved_not_yet = f"127.0.0.1:{healthy}", f"127.0.0.1:{closed}"
    assert run_fact(EtcdHealth(), endpoints=[on_metrics]) == {on_metrics: True}
    # A member not yet on TLS has no metrics port: its client port answers.
    assert run_fact(EtcdHealth(), endpoints=[moved_not_yet], fallback_port=healthy) == {
        moved_not_yet: True
    }
    assert run_fact(EtcdHealth(), endpoints=[moved_not_yet]) == {moved_not_yet: False}
    # "health": "false" is unhealthy wherever it comes from.
    unhealthy = f"127.0.0.1:{sick}"
    assert run_fact(EtcdHealth(), endpoints=[unhealthy], fallback_port=sick) == {unhealthy: False}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1, made with openssl as the deploy does."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is in controller-packages.txt and must be installed")
    root = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    openssl("genpkey", *ec, "-out", "ca.key")
    openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=test CA", "-days", "2",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "ca.pem")  # fmt: skip
    openssl("genpkey", *ec, "-out", "host.key")
    openssl("req", "-new", "-key", "host.key", "-subj", "/CN=member", "-out", "host.csr")
    (root / "host.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n"
    )
    openssl("x509", "-req", "-in", "host.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "2",
            "-extfile", "host.ext", "-out", "host.pem")  # fmt: skip
    return root


@pytest.fixture
def tls_member(pki: Path) -> Iterator[int]:
    """A TLS server that, as etcd with --client-cert-auth, requires a client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "host.pem", pki / "host.key")
    context.load_verify_locations(pki / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from _serve(server)


def test_tls_is_told_from_plain_http_without_a_client_certificate(
    tls_member: int, healthy: int
) -> None:
    secure, plain, closed = (
        f"127.0.0.1:{tls_member}",
        f"127.0.0.1:{healthy}",
        f"127.0.0.1:{free_port()}",
    )
    assert run_fact(EtcdServesTls(), endpoints=[secure, plain, closed]) == {
        secure: True,
        plain: False,
        closed: False,
    }


# --- the deploy's plan on a member part-way through the move ------------------------------


class _Answers:
    """A host (or a peer) that answers each fact from ``answer(fact name, kwargs)``."""

    def __init__(self, name: str, groups: list[str], data: dict[str, Any], answer: Any) -> None:
        self.name, self.groups, self.data, self._answer = name, groups, data, answer

    def get_fact(self, fact: Any, **kwargs: Any) -> Any:
        return self._answer(self.name, fact.__name__, kwargs)

    def log(self, *args: Any) -> None:
        pass


def plan_member(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology, name: str, stage: int
) -> list[Call]:
    """deploy_etcd's calls on ``name``: every member running at ``stage``, all healthy,
    Patroni on http, the file about to change."""

    def answer(host_name: str, fact: str, kwargs: dict[str, Any]) -> Any:
        if fact == "UnitState":
            return {"sub": "running"}
        if fact == "FindInFile" and kwargs["pattern"] == etcd.STAGE_PATTERN:
            return [f'SEAWALL_ETCD_TLS_STAGE="{stage}"']
        if fact == "FindInFile":
            return []  # Patroni's files say http; ETCD_INITIAL_CLUSTER_STATE says new
        if fact == "EtcdHealth":
            return dict.fromkeys(kwargs["endpoints"], True)
        if fact in ("EtcdConfigPending", "File"):
            return False if fact == "EtcdConfigPending" else {"mode": 644}
        if fact == "Directory":
            return {"mode": 700}
        raise AssertionError(f"unexpected fact {fact} {kwargs}")

    hosts = {h.name: _Answers(h.name, list(h.groups), dict(h.data), answer) for h in lab.hosts}
    calls: list[Call] = []
    recorder = Recorder("seawall", calls)
    fake_inventory = SimpleNamespace(
        get_group=lambda group, default=None: [hosts[h.name] for h in lab.group(group)],
        get_active_hosts=lambda: list(hosts.values()),
    )
    monkeypatch.setattr(etcd, "host", hosts[name])
    monkeypatch.setattr(etcd, "inventory", fake_inventory)
    monkeypatch.setattr(common, "inventory", fake_inventory)
    for module in ("systemd", "server"):
        monkeypatch.setattr(etcd, module, Recorder(module, calls))
    for op in (
        "install_packages",
        "unit_dropin",
        "member_restarted",
        "member_rejoined",
        "tls_ca",
        "tls_key",
        "tls_signed",
        "tls_certificate",
    ):
        monkeypatch.setattr(
            etcd,
            op,
            lambda *args, _op=op, **kwargs: recorder.__getattr__(_op)(args=list(args), **kwargs),
        )
    monkeypatch.setattr(etcd, "files", SimpleNamespace(put=_changed(Recorder("files", calls))))
    etcd.deploy_etcd._inner()
    return calls


def _changed(recorder: Any) -> Any:
    """files.put that records the call and reports a change (the file is about to change)."""

    def put(**kwargs: Any) -> SimpleNamespace:
        call = recorder.put(**kwargs)
        call.changed = True
        return SimpleNamespace(will_change=True, did_change=call.did_change)

    return put


def test_step_two_moves_each_members_peer_url_to_https_before_its_gated_restart(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    calls = plan_member(monkeypatch, lab, "data-2", stage=1)
    member = lab.host("data-2")
    config = next(c for c in calls if c.op == "files.put")
    assert 'SEAWALL_ETCD_TLS_STAGE="2"' in config.kwargs["src"].getvalue()
    (restart,) = [c for c in calls if c.op == "seawall.member_restarted"]
    assert restart.kwargs["member"] == "data-2"
    assert restart.kwargs["peer_url"] == f"https://{member.address}:{member.data['etcd_peer_port']}"
    assert restart.kwargs["_serial"] is True
    # The gate asks the others' health at their metrics port, then their client port.
    metrics, client = member.data["etcd_metrics_port"], member.data["etcd_client_port"]
    others = [m for m in lab.group("etcd") if m.name != "data-2"]
    assert restart.kwargs["peers"] == [f"{m.address}:{metrics}" for m in others]
    assert restart.kwargs["client_port"] == client
    assert restart.kwargs["tls"]["cert"] == f"{member.data['etcd_tls_dir']}/host.pem"


def test_plain_http_stays_on_the_client_port_while_patroni_uses_it(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    calls = plan_member(monkeypatch, lab, "data-1", stage=2)
    config = next(c for c in calls if c.op == "files.put")
    # Every member at step 2, but Patroni's files say http: no step 3.
    assert 'SEAWALL_ETCD_TLS_STAGE="2"' in config.kwargs["src"].getvalue()
    # data-1 keeps the CA and signs members (with 127.0.0.1) and Patroni (its own name).
    signed = [c for c in calls if c.op == "seawall.tls_signed"]
    assert [c.kwargs.get("loopback", False) for c in signed] == [True, False]
    assert [c.kwargs.get("suffix", "") for c in signed] == ["", etcd.PATRONI_SUFFIX]
