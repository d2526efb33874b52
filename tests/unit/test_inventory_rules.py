"""Every inventory rule of docs/inventory-rules.md: a malformed inventory is refused
with exit 2 and a message naming file, host and key, before any host is contacted."""

import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from seawall import defaults, inventory, schema, settings
from seawall.errors import SeawallError

REPO = Path(__file__).resolve().parents[2]
HOSTS = {
    "data-1": "10.9.0.11",
    "data-2": "10.9.0.12",
    "data-3": "10.9.0.13",
    "app-1": "10.9.0.21",
    "gw-1": "10.9.0.31",
    "ops-1": "10.9.0.41",
}
SECRETS = sorted({n for names in settings.setting({}, "required_secrets").values() for n in names})
GROUPS = {
    "redis": ["data-1", "data-2", "data-3"],
    "sentinel": ["data-1", "data-2", "data-3"],
    "etcd": ["data-1", "data-2", "data-3"],
    "postgres": ["data-1", "data-2"],
    "app": ["app-1"],
    "gateway": ["gw-1"],
    "ops": ["ops-1"],
}


def write_site(
    tmp_path: Path,
    *,
    hosts: dict[str, str] | None = None,
    groups: dict[str, list[str]] | None = None,
    host_data: dict[str, dict[str, Any]] | None = None,
    group_data: str = "",
    inventory_tail: str = "",
    ssh_port: int = 1,
) -> Path:
    """Write inventories/site.py (checking itself first, as lab.py does) and its group data."""
    folder = tmp_path / "inventories"
    (folder / "group_data").mkdir(parents=True)
    key = tmp_path / "admin.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample admin\n")
    secrets_file = tmp_path / "secrets"
    secrets_file.write_text("".join(f"{name}=value-{name}\n" for name in SECRETS))
    secrets_file.chmod(0o600)
    extra = host_data or {}
    entries = "".join(
        f"    ({name!r}, {{'ssh_hostname': '127.0.0.1', 'ssh_port': {ssh_port}, "
        f"'private_address': {address!r}, **{extra.get(name, {})!r}}}),\n"
        for name, address in (HOSTS if hosts is None else hosts).items()
    )
    listed = "".join(f"{g} = {m!r}\n" for g, m in {**GROUPS, **(groups or {})}.items())
    (folder / "site.py").write_text(
        "from seawall.inventory import check_before_connect\n"
        "check_before_connect(__file__)\n"
        f"all = [\n{entries}]\n{listed}" + textwrap.dedent(inventory_tail)
    )
    (folder / "group_data" / "all.py").write_text(
        f"admin_ssh_public_key_file = {str(key)!r}\n"
        f"secrets_file = {str(secrets_file)!r}\n" + textwrap.dedent(group_data)
    )
    return folder / "site.py"


def catalogue(**changes: dict[str, Any]) -> str:
    """Group data setting `services` to the default catalogue with some entries changed."""
    services = [{**s, **changes.get(s["name"], {})} for s in defaults.SERVICES["services"]]
    return f"services = {services!r}\n"


@dataclass(frozen=True)
class Case:
    """A malformed inventory, what the refusal must name, and the file that holds the mistake."""

    id: str
    expect: str
    file: str = "all.py"
    host: str | None = None
    setup: dict[str, Any] = field(default_factory=dict)


ZONES = defaults.GATEWAY["gateway_rate_zones"]
CASES = [
    # Hosts and groups.
    Case("host-in-group-defined-nowhere", "group app: 'app-2' is defined nowhere", "site.py",
         setup={"groups": {"app": ["app-1", "app-2"]}}),
    Case("typo-host-in-group", "'app1' is defined nowhere: did you mean 'app-1'?", "site.py",
         setup={"groups": {"app": ["app1"]}}),
    Case("unsafe-host-name", "host name", "site.py", "gw;1",
         setup={"hosts": {**{h: a for h, a in HOSTS.items() if h != "gw-1"}, "gw;1": "10.9.0.31"},
                "groups": {"gateway": ["gw;1"]}}),
    Case("even-etcd-members", "group etcd: 4 members", "site.py",
         setup={"groups": {"etcd": ["data-1", "data-2", "data-3", "app-1"]}}),
    # Addresses.
    Case("public-address", "private_address: 8.8.8.8 is not a private", "site.py", "gw-1",
         setup={"hosts": {**HOSTS, "gw-1": "8.8.8.8"}}),
    Case("unspecified-address", "private_address: 0.0.0.0", "site.py", "gw-1",
         setup={"hosts": {**HOSTS, "gw-1": "0.0.0.0"}}),
    Case("ipv6-address", "is not an IPv4 address", "site.py", "gw-1",
         setup={"hosts": {**HOSTS, "gw-1": "fd00::31"}}),
    # Types and ranges.
    Case("string-sentinel-timing", "sentinel_down_after_ms: Input should be a valid integer",
         setup={"group_data": "sentinel_down_after_ms = '800'\n"}),
    Case("negative-rate-zone", "gateway_rate_zones.general.rate: Input should be greater",
         setup={"group_data": f"gateway_rate_zones = "
                f"{ {**ZONES, 'general': {'rate': -5, 'burst': 10}}!r}\n"}),
    Case("bool-for-port", "redis_port: Input should be a valid integer",
         setup={"group_data": "redis_port = True\n"}),
    Case("port-out-of-range", "postgres_port: Input should be less than or equal to 65535",
         setup={"group_data": "postgres_port = 70000\n"}),
    Case("none-where-not-off", "redis_maxmemory: Input should be a valid string",
         setup={"group_data": "redis_maxmemory = None\n"}),
    Case("list-for-dict", "required_secrets: Input should be a valid dictionary",
         setup={"group_data": "required_secrets = ['redis_password']\n"}),
    Case("choice-out-of-set", "redis_appendfsync: Input should be",
         setup={"group_data": "redis_appendfsync = 'sometimes'\n"}),
    Case("bad-size", "services_memory_max: must be a size",
         setup={"group_data": "services_memory_max = 'lots'\n"}),
    Case("fail-timeout-format", "gateway_fail_timeout: must be whole seconds",
         setup={"group_data": "gateway_fail_timeout = '5 seconds'\n"}),
    Case("journal-tag-format", "gateway_journal_tag: must be an NGINX syslog tag",
         setup={"group_data": "gateway_journal_tag = 'nginx-access'\n"}),
    Case("patroni-ttl-range", "patroni_ttl: Input should be greater than or equal to 20",
         setup={"group_data": "patroni_ttl = 10\n"}),
    Case("service-port-range", "services[execution].port: Input should be less than",
         setup={"group_data": catalogue(execution={"port": 0x10000})}),
    # Unknown keys.
    Case("misspelt-key", "unknown key 'sentinel_qourum': did you mean 'sentinel_quorum'?",
         setup={"group_data": "sentinel_qourum = 2\n"}),
    Case("misspelt-nested-key", "unknown key 'reed': did you mean 'read'?",
         setup={"group_data": "gateway_timeouts = {'connect': '2s', 'send': '1s', 'reed': '9s'}"}),
    Case("misspelt-service-field", "services[execution]: unknown key 'prot': did you mean 'port'?",
         setup={"group_data": catalogue(execution={"prot": 1})}),
    Case("unknown-key", "frobnicate: unknown key 'frobnicate': seawall reads no such setting",
         setup={"group_data": "frobnicate = 1\n"}),
    Case("misspelt-host-key", "unknown key 'redis_prot': did you mean 'redis_port'?", "site.py",
         "data-2",
         setup={"host_data": {"data-2": {"redis_prot": 6380}}}),
    Case("password-in-data", "ssh_password: a password never lives in inventory data",
         setup={"group_data": "ssh_password = 'hunter2'\n"}),
    # Ports.
    Case("service-port-collides", "services[execution].port: port 6432 is also pgbouncer_port",
         host="app-1", setup={"group_data": catalogue(execution={"port": 6432})}),
    Case("ports-collide", "redis_port: port 6379 is also haproxy_rw_port", "site.py", "data-3",
         setup={"host_data": {"data-3": {"haproxy_rw_port": 6379}}}),
    # Names that reach shells, units and config files.
    Case("unsafe-master-name", "sentinel_master_name: must be a name",
         setup={"group_data": "sentinel_master_name = 'platform; FLUSHALL'\n"}),
    Case("unsafe-user", "admin_user: must be a Unix user name",
         setup={"group_data": "admin_user = 'root user'\n"}),
    Case("unit-injection-command", "services[execution].command: must be an absolute program",
         setup={"group_data": catalogue(
             execution={"command": "/usr/bin/app\nExecStartPre=/bin/sh -c id"})}),
    Case("environment-with-space", "services[execution].environment.MODE: must be a value",
         setup={"group_data": catalogue(execution={"environment": {"MODE": "a b"}})}),
    Case("ssh-option-hostname", "ssh_hostname: must be a host name", "site.py", "gw-1",
         setup={"host_data": {"gw-1": {"ssh_hostname": "-oProxyCommand=sh"}}}),
    # Relations.
    Case("stop-before-read-timeout", "services_timeout_stop_sec: 30 s stops marketdata",
         setup={"group_data": "gateway_route_timeouts = {'marketdata': {'read': '60s'}}\n"}),
    Case("database-owned-twice", "services[rl-training].postgres_database: 'trading' is already",
         setup={"group_data": catalogue(**{"rl-training": {"postgres_database": "trading"}})}),
    Case("reads-no-database", "services[backend].postgres_reads: 'ghost' is no service's",
         setup={"group_data": catalogue(backend={"postgres_reads": ["ghost"]})}),
    Case("derived-roles-stated", "postgres_service_roles: is derived from the services catalogue",
         setup={"group_data": "postgres_service_roles = "
                f"{[*defaults.POSTGRES['postgres_service_roles'], 'audit']!r}\n"}),
    Case("derived-owners-stated", "postgres_databases: is derived from the services catalogue",
         setup={"group_data": "postgres_databases = "
                f"{ {**defaults.POSTGRES['postgres_databases'], 'audit': 'nobody'}!r}\n"}),
    Case("unknown-need", "services[execution].needs: 'risk' is neither",
         setup={"group_data": catalogue(execution={"needs": ["redis", "risk"]})}),
    Case("duplicate-route", "services[marketdata].route: '/api/rl/' is also the route of",
         setup={"group_data": catalogue(marketdata={"route": "/api/rl/"})}),
    Case("unknown-route-zone", "gateway_route_zones.execution: zone 'exec'",
         setup={"group_data": "gateway_route_zones = {'execution': ['exec']}\n"}),
    Case("route-timeout-of-no-service", "gateway_route_timeouts.marketdat: no service",
         setup={"group_data": "gateway_route_timeouts = {'marketdat': {'read': '5s'}}\n"}),
    Case("patroni-timing", "patroni_ttl: loop_wait + 2 x retry_timeout (22) exceeds ttl 20",
         setup={"group_data": "patroni_retry_timeout = 10\n"}),
    Case("etcd-timing", "etcd_election_timeout: must be at least 5 x",
         setup={"group_data": "etcd_election_timeout = 100\n"}),
    Case("tls-half-set", "gateway_tls_certificate_key: set both",
         setup={"group_data": "gateway_tls_certificate = '/etc/ssl/gw.pem'\n"}),
    Case("min-replicas-over-replicas", "redis_min_replicas_to_write: 3 with 2 replicas",
         setup={"group_data": "redis_min_replicas_to_write = 3\n"}),
    Case("hosts-disagree", "sentinel_quorum: differs from the other hosts' value", "site.py",
         "data-1", setup={"host_data": {"data-1": {"sentinel_quorum": 3}}}),
    # Python errors in the inventory and its group data: one line, file:line.
    Case("group-data-name-error", "all.py:3: NameError: name 'undefined_name' is not defined",
         setup={"group_data": "x = undefined_name\n"}),
    Case("group-data-syntax-error", "all.py:3: SyntaxError:",
         setup={"group_data": "x = (\n"}),
    Case("inventory-runtime-error", "site.py:18: ZeroDivisionError: division by zero", "site.py",
         setup={"inventory_tail": "x = 1 / 0\n"}),
]  # fmt: skip


def test_at_least_thirty_malformed_inventories() -> None:
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_inventory_is_refused_with_exit_2(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # The inventory file's own first line: what pyinfra runs before connecting.
    monkeypatch.chdir(tmp_path)
    path = write_site(tmp_path, **case.setup)
    with pytest.raises(SystemExit) as raised:
        inventory.check_before_connect(str(path))
    assert raised.value.code == 2
    stderr = capsys.readouterr().err
    assert case.expect in stderr
    line = next(line for line in stderr.splitlines() if case.expect in line)
    # The line names the file to edit and, for a host's key, the host.
    assert case.file in line
    if case.host:
        assert f" {case.host}: " in line
    assert "Traceback" not in stderr


def test_the_cases_start_from_a_valid_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert inventory.validate(inventory.load(write_site(tmp_path))) == []


def test_none_turns_a_documented_listener_off(tmp_path: Path) -> None:
    path = write_site(tmp_path, group_data="gateway_internal_http_port = None\n")
    assert inventory.validate(inventory.load(path)) == []


def test_problem_names_the_group_data_file_that_set_the_key(tmp_path: Path) -> None:
    path = write_site(tmp_path, group_data="redis_port = 'x'\n")
    problem = inventory.validate(inventory.load(path))[0]
    assert (problem.host, problem.key) == ("data-1", "redis_port")
    assert problem.file is not None and problem.file.endswith("inventories/group_data/all.py")


def test_a_contradiction_names_the_file_that_set_either_side(tmp_path: Path) -> None:
    # services_timeout_stop_sec keeps its default; the route timeout in all.py broke it.
    path = write_site(
        tmp_path, group_data="gateway_route_timeouts = {'backend': {'read': '99s'}}\n"
    )
    found = inventory.validate(inventory.load(path))
    assert [(p.key, Path(p.file or "").name) for p in found] == [
        ("services_timeout_stop_sec", "all.py")
    ]


def test_a_collision_with_a_default_names_the_file_of_the_other_port(tmp_path: Path) -> None:
    path = write_site(tmp_path, group_data="haproxy_ro_port = 5432\n")
    found = inventory.validate(inventory.load(path))
    assert [(p.key, p.message, Path(p.file or "").name) for p in found] == [
        ("postgres_port", "port 5432 is also haproxy_ro_port", "all.py")
    ]


def test_a_password_is_never_repeated(tmp_path: Path) -> None:
    path = write_site(tmp_path, group_data="ssh_password = 'hunter2'\nredis_pasword = 'hunter3'\n")
    text = "\n".join(str(p) for p in inventory.validate(inventory.load(path)))
    assert "redis_pasword: unknown key" in text
    assert "hunter" not in text


def test_check_raises_one_seawall_error_for_a_python_error(tmp_path: Path) -> None:
    path = write_site(tmp_path, group_data="x = 1 +\n")
    with pytest.raises(SeawallError) as raised:
        inventory.check(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'inventories' / 'group_data' / 'all.py'}:3: Syntax")


def test_every_key_of_the_defaults_has_its_type_in_the_schema() -> None:
    for name, model in schema.CONCERNS.items():
        assert set(model.model_fields) == set(getattr(defaults, name)), name
        # The defaults themselves are valid.
        model.model_validate(getattr(defaults, name))


def test_every_key_the_inventories_set_is_known() -> None:
    for name in ("lab.py", "production.example.py"):
        topology = inventory.load(REPO / "inventories" / name)
        for host in topology:
            assert set(host.origins) <= schema.KNOWN_KEYS, (name, host.name)


# --- pyinfra and `seawall check` themselves, against a listener no host may reach ---


class Listener:
    """A loopback TCP port that counts the connections it accepts (and closes them)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.accepted = 0
        self.socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    yield served
    served.close()


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"},
    )


PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
SEAWALL = str(Path(sys.executable).with_name("seawall"))
BY_ID = {case.id: case for case in CASES}


@pytest.mark.parametrize(
    "case_id",
    [
        "host-in-group-defined-nowhere",
        "string-sentinel-timing",
        "service-port-collides",
        "misspelt-key",
        "group-data-name-error",
    ],
)
def test_pyinfra_refuses_before_contacting_a_host(
    case_id: str, tmp_path: Path, listener: Listener
) -> None:
    case = BY_ID[case_id]
    path = write_site(tmp_path, ssh_port=listener.port, **case.setup)
    # From the checkout, as the README runs it (its config.py is read first).
    result = run([PYINFRA, "-y", str(path), "exec", "--", "true"], REPO)
    assert result.returncode == 2, result.stdout + result.stderr
    assert case.expect in result.stderr
    assert "Traceback" not in result.stderr
    assert listener.accepted == 0


def test_pyinfra_refuses_an_inventory_that_does_not_compile(
    tmp_path: Path, listener: Listener
) -> None:
    path = write_site(tmp_path, ssh_port=listener.port, inventory_tail="x = (\n")
    result = run([PYINFRA, "-y", str(path), "exec", "--", "true"], REPO)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"seawall: {path}:18: SyntaxError:" in result.stderr
    assert "Traceback" not in result.stderr
    assert listener.accepted == 0


def test_the_listener_would_see_pyinfra_connect(tmp_path: Path, listener: Listener) -> None:
    # The control: with a valid inventory pyinfra does reach the listener (and
    # fails its SSH handshake), so zero connections above means none was tried.
    path = write_site(tmp_path, ssh_port=listener.port)
    result = run([PYINFRA, "-y", str(path), "exec", "--", "true"], tmp_path)
    assert result.returncode != 0
    assert listener.accepted >= 1


def test_seawall_check_refuses_with_exit_2(tmp_path: Path, listener: Listener) -> None:
    case = BY_ID["negative-rate-zone"]
    path = write_site(tmp_path, ssh_port=listener.port, **case.setup)
    result = run([SEAWALL, "check", "-i", str(path)], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert case.expect in result.stderr
    assert listener.accepted == 0
