"""Load and validate an inventory exactly as pyinfra sees it, before any host is touched.

The inventory is read through pyinfra's own loader (group data from ``./group_data``
then the inventory's ``group_data/``), so the CLI, the tests and the deploys agree.
Every problem names the host and the inventory key.
"""

import ipaddress
import os
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# pyinfra's CLI package monkey-patches the standard library for gevent when it
# is imported; importing it here, first, keeps that consistent for every module
# imported after it (and keeps gevent from warning about ssl).
from pyinfra_cli.inventory import make_inventory_from_files  # isort: skip
from pyinfra.api import State
from pyinfra.context import ctx_state

from seawall import defaults, secrets
from seawall.errors import SeawallError

# Set while seawall itself loads an inventory file, so the file's own
# check_before_connect() call does not recurse.
_loading: ContextVar[bool] = ContextVar("seawall_inventory_loading", default=False)

INVENTORY_WIDE = "inventory"


@dataclass(frozen=True)
class Host:
    """One inventory host: its name, groups and data (defaults under group and host data)."""

    name: str
    groups: tuple[str, ...]
    data: Mapping[str, Any] = field(repr=False)

    @property
    def address(self) -> str:
        return str(self.data["private_address"])

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(role for role in defaults.ROLES if role in self.groups)

    @property
    def required_secrets(self) -> list[str]:
        """The secrets this host's roles need (defaults.SECRETS)."""
        wanted = self.data["required_secrets"]
        return sorted({name for role in self.roles for name in wanted.get(role, [])})


@dataclass(frozen=True)
class Topology:
    """The hosts of one inventory file."""

    path: Path
    hosts: tuple[Host, ...]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def group(self, name: str) -> list[Host]:
        return [host for host in self.hosts if name in host.groups]

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise SeawallError(f"{self.path}: no host named {name!r}")

    def value(self, key: str) -> Any:
        """Return a setting that must be the same on every host (e.g. ``lab_bridge``)."""
        values = {repr(host.data.get(key)) for host in self.hosts}
        if len(values) != 1:
            raise SeawallError(f"{self.path}: {key} differs between hosts ({sorted(values)})")
        return self.hosts[0].data.get(key)


@dataclass(frozen=True)
class Problem:
    host: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.host}: {self.key}: {self.message}"


def load(path: str | Path) -> Topology:
    """Load an inventory file with its group data, as pyinfra does.

    Raises:
        SeawallError: the file does not exist or pyinfra cannot read it.
    """
    path = Path(path)
    if not path.is_file():
        raise SeawallError(f"inventory {path} does not exist")
    token = _loading.set(True)
    try:
        # pyinfra's loader records the file it executes on the current state.
        with ctx_state.use(State()):
            inventory = make_inventory_from_files(str(path), cwd=os.getcwd())
    except SeawallError:
        raise
    except Exception as error:
        raise SeawallError(f"inventory {path}: {error}") from error
    finally:
        _loading.reset(token)
    base = defaults.all_defaults()
    hosts = []
    for pyinfra_host in inventory:
        data = dict(base)
        data.update(pyinfra_host.data.dict())
        groups = tuple(sorted(set(pyinfra_host.groups)))
        hosts.append(Host(name=pyinfra_host.name, groups=groups, data=data))
    return Topology(path=path, hosts=tuple(hosts))


def _role_problems(topology: Topology) -> Iterator[Problem]:
    for role, minimum in defaults.ROLES.items():
        count = len(topology.group(role))
        if count < minimum:
            yield Problem(
                INVENTORY_WIDE, f"group {role}", f"needs at least {minimum} hosts, has {count}"
            )


def _address_problems(topology: Topology) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    for host in topology:
        raw = host.data.get("private_address")
        if not raw:
            yield Problem(host.name, "private_address", "missing")
            continue
        try:
            address = str(ipaddress.ip_address(str(raw)))
        except ValueError:
            yield Problem(host.name, "private_address", f"{raw!r} is not an IP address")
            continue
        if address in seen:
            yield Problem(
                host.name, "private_address", f"{address} is also the address of {seen[address]}"
            )
        else:
            seen[address] = host.name


def _port_problems(topology: Topology) -> Iterator[Problem]:
    for host in topology:
        used: dict[int, str] = {}
        for key in defaults.PORT_KEYS:
            port = host.data.get(key)
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                yield Problem(host.name, key, f"{port!r} is not a TCP port number")
                continue
            if port in used:
                yield Problem(host.name, key, f"port {port} is also {used[port]}")
            else:
                used[port] = key


def _sentinel_problems(topology: Topology) -> Iterator[Problem]:
    sentinels = topology.group("sentinel")
    for host in sentinels:
        quorum = host.data.get("sentinel_quorum")
        count = len(sentinels)
        if not isinstance(quorum, int) or isinstance(quorum, bool):
            yield Problem(host.name, "sentinel_quorum", f"{quorum!r} is not a whole number")
        elif quorum <= count // 2 or quorum > count:
            yield Problem(
                host.name,
                "sentinel_quorum",
                f"{quorum} with {count} sentinels: must be a majority "
                f"({count // 2 + 1}..{count}) so a minority can never fail over",
            )


def _admin_key_problems(topology: Topology) -> Iterator[Problem]:
    for host in topology:
        key_file = host.data.get("admin_ssh_public_key_file")
        if not key_file:
            yield Problem(host.name, "admin_ssh_public_key_file", "missing")
        elif not Path(str(key_file)).is_file():
            yield Problem(host.name, "admin_ssh_public_key_file", f"{key_file} does not exist")


def _secret_problems(topology: Topology) -> Iterator[Problem]:
    reported: set[str] = set()
    for host in topology:
        secrets_file = host.data.get("secrets_file")
        try:
            _, missing = secrets.resolve(host.required_secrets, secrets_file)
        except SeawallError as error:
            yield Problem(host.name, "secrets_file", str(error))
            continue
        for name in missing:
            if name in reported:
                continue
            reported.add(name)
            where = f"secrets_file {secrets_file} nor " if secrets_file else ""
            yield Problem(host.name, f"secret {name}", f"not in {where}${secrets.env_name(name)}")


def validate(topology: Topology, check_secrets: bool = True) -> list[Problem]:
    """Return every problem in the inventory; an empty list means it is usable."""
    checks = [
        _role_problems,
        _address_problems,
        _port_problems,
        _sentinel_problems,
        _admin_key_problems,
    ]
    if check_secrets:
        checks.append(_secret_problems)
    return [problem for check in checks for problem in check(topology)]


def check(path: str | Path, check_secrets: bool = True) -> Topology:
    """Load and validate an inventory.

    Raises:
        SeawallError: listing every problem, each naming the host and key.
    """
    topology = load(path)
    problems = validate(topology, check_secrets=check_secrets)
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise SeawallError(f"inventory {topology.path} is not valid:\n{lines}")
    return topology


def check_before_connect(inventory_file: str) -> None:
    """Validate the inventory from inside the inventory file, before pyinfra connects.

    pyinfra executes the inventory file before it opens any connection, so an
    inventory that ends with this call stops a bad deploy before it touches a host.
    """
    if _loading.get():
        return
    try:
        check(inventory_file)
    except SeawallError as error:
        print(f"seawall: {error}", file=sys.stderr)
        raise SystemExit(2) from None
