"""Load and validate an inventory exactly as pyinfra sees it, before any host is touched.

The inventory is read through pyinfra's own loader (group data from ``./group_data``
then the inventory's ``group_data/``), so the CLI, the tests and the deploys agree.
Every problem names the host and the inventory key.
"""

import ast
import difflib
import ipaddress
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# pyinfra's CLI package monkey-patches the standard library for gevent when it
# is imported; importing it here, first, keeps that consistent for every module
# imported after it (and keeps gevent from warning about ssl).
from pyinfra_cli.inventory import make_inventory_from_files  # isort: skip
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.util import exec_file

from seawall import defaults, schema, secrets, settings
from seawall.errors import SeawallError

# Set while seawall itself loads an inventory file, so the file's own
# check_before_connect() call does not recurse.
_loading: ContextVar[bool] = ContextVar("seawall_inventory_loading", default=False)
# Inventory files already checked in this process: pyinfra's config.py and the
# inventory file itself both ask, the second finds it done.
_checked: set[str] = set()

INVENTORY_WIDE = "inventory"


@dataclass(frozen=True)
class Host:
    """One inventory host: its name, groups and data (defaults under group and host data)."""

    name: str
    groups: tuple[str, ...]
    data: Mapping[str, Any] = field(repr=False)
    # The keys the inventory or its group data set, and the file that set each
    # (the rest are defaults): problems name the file to edit.
    origins: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def address(self) -> str:
        return str(self.data["private_address"])

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(role for role in defaults.ROLES if role in self.groups)

    @property
    def required_secrets(self) -> list[str]:
        """The secrets this host's roles need (defaults.SECRETS, plus the service roles')."""
        wanted = settings.setting(self.data, "required_secrets")
        return sorted({name for role in self.roles for name in wanted.get(role, [])})


@dataclass(frozen=True)
class Topology:
    """The hosts of one inventory file."""

    path: Path
    hosts: tuple[Host, ...]
    # Each group's members as the inventory file lists them, before pyinfra
    # drops names that `all` does not define.
    listed: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

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
    # The file that set the key; None for a default or a problem of no one file.
    file: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}{self.host}: {self.key}: {self.message}"


def _group_data_folders(path: Path, cwd: str) -> list[Path]:
    # pyinfra's order (pyinfra_cli.inventory.make_inventory_from_files): the
    # working directory's group_data, then the inventory's own; the later wins.
    folders = [Path(cwd) / "group_data"]
    if str(path.parent.resolve()) != cwd:
        folders.append(path.parent.resolve() / "group_data")
    return folders


def python_error(error: BaseException) -> str:
    """Return ``file:line: ErrorType: message`` for an error raised by an inventory file."""
    # pyinfra wraps errors from the files it executes (UnexpectedExternalError).
    inner = getattr(error, "exception", None)
    inner = inner if isinstance(inner, BaseException) else error
    if isinstance(inner, SyntaxError):
        return f"{inner.filename}:{inner.lineno}: {type(inner).__name__}: {inner.msg}"
    executed = getattr(error, "filename", None)
    frames = list(traceback.walk_tb(getattr(inner, "_traceback", None) or inner.__traceback__))
    # The deepest line of the inventory file itself: what its author must edit.
    ours = [frame for frame, _ in frames if frame.f_code.co_filename == executed]
    frame = ours[-1] if ours else (frames[-1][0] if frames else None)
    where = f"{frame.f_code.co_filename}:{frame.f_lineno}: " if frame else ""
    return f"{where}{type(inner).__name__}: {inner}"


def _listed_groups(path: Path) -> dict[str, tuple[str, ...]]:
    """Return each group's host names as the inventory file lists them."""
    listed = {}
    for name, value in exec_file(str(path), return_locals=True).items():
        if name.startswith("_"):
            continue
        members = value[0] if isinstance(value, tuple) and value else value
        if isinstance(members, list):
            listed[name] = tuple(
                str(item[0] if isinstance(item, tuple) and item else item) for item in members
            )
    return listed


def _assigned_names(path: Path) -> set[str]:
    """Return the names a group data file assigns at its top level."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _origins(path: Path, inventory: Any, pyinfra_host: Any, folders: list[Path]) -> dict[str, str]:
    """Return {key: file that set it} for one host, the winner where several did."""
    origins = {}
    # Groups in pyinfra's order: a later group's data wins, and host data over all.
    for group in ["all", *pyinfra_host.groups]:
        # pyinfra keeps the `all` group's data as the inventory's own.
        group_data = inventory.get_data() if group == "all" else inventory.get_group_data(group)
        for key in group_data:
            origins[key] = str(path)
            for folder in folders:
                candidate = folder / f"{group}.py"
                if candidate.is_file() and key in _assigned_names(candidate):
                    origins[key] = str(candidate)
    for key in inventory.get_host_data(pyinfra_host.name):
        origins[key] = str(path)
    return origins


def load(path: str | Path) -> Topology:
    """Load an inventory file with its group data, as pyinfra does.

    Raises:
        SeawallError: the file does not exist, or it or a group data file fails
            to run (one line: ``file:line: ErrorType: message``).
    """
    path = Path(path)
    if not path.is_file():
        raise SeawallError(f"inventory {path} does not exist")
    cwd = os.getcwd()
    token = _loading.set(True)
    try:
        # pyinfra's loader records the file it executes on the current state.
        with ctx_state.use(State()):
            inventory = make_inventory_from_files(str(path), cwd=cwd)
            listed = _listed_groups(path)
    except SeawallError:
        raise
    except Exception as error:
        raise SeawallError(python_error(error)) from None
    finally:
        _loading.reset(token)
    folders = _group_data_folders(path, cwd)
    base = defaults.all_defaults()
    hosts = []
    for pyinfra_host in inventory:
        data = dict(base)
        data.update(pyinfra_host.data.dict())
        # What the catalogue implies, unless the inventory states it (validation refuses that).
        own = pyinfra_host.data.dict()
        data.update(
            {key: settings.setting(data, key) for key in settings.DERIVED if key not in own}
        )
        groups = tuple(sorted(set(pyinfra_host.groups)))
        origins = _origins(path, inventory, pyinfra_host, folders)
        hosts.append(Host(name=pyinfra_host.name, groups=groups, data=data, origins=origins))
    return Topology(path=path, hosts=tuple(hosts), listed=listed)


def _role_problems(topology: Topology) -> Iterator[Problem]:
    for role, minimum in defaults.ROLES.items():
        count = len(topology.group(role))
        if count < minimum:
            yield Problem(
                INVENTORY_WIDE, f"group {role}", f"needs at least {minimum} hosts, has {count}"
            )
    etcd = len(topology.group("etcd"))
    if etcd and etcd % 2 == 0:
        # An even member adds a vote but no tolerated loss: 4 members survive one, as 3 do.
        yield Problem(INVENTORY_WIDE, "group etcd", f"{etcd} members: use an odd number")


def _group_member_problems(topology: Topology) -> Iterator[Problem]:
    """A name in a group that `all` does not define: pyinfra would drop it silently."""
    defined = [host.name for host in topology]
    for group, members in topology.listed.items():
        for name in members:
            if name not in defined:
                close = difflib.get_close_matches(name, defined, n=1)
                hint = f": did you mean {close[0]!r}?" if close else ""
                yield Problem(
                    INVENTORY_WIDE, f"group {group}", f"{name!r} is defined nowhere{hint}"
                )


def _host_name_problems(topology: Topology) -> Iterator[Problem]:
    # Host names reach shell commands (backup), pg_hba and NGINX upstreams.
    for host in topology:
        if not schema.SAFE_NAME.fullmatch(host.name):
            yield Problem(host.name, "host name", "must be letters, digits, '.', '_', '-'")


def _key_problems(topology: Topology) -> Iterator[Problem]:
    for host in topology:
        for key, message in schema.key_problems(host.data):
            yield Problem(host.name, key, message)


def _origin(host: Host, keys: list[str]) -> str | None:
    """The file that set the first of ``keys`` a file set (the rest are defaults)."""
    roots = [key.split("[")[0].split(".")[0] for key in keys]
    return next((host.origins[root] for root in roots if root in host.origins), None)


def _relation_problems(topology: Topology) -> Iterator[Problem]:
    for host in topology:
        for key, message, related in schema.relation_problems(host.data):
            # The key reported may be a default; the mistake is in the file that set another.
            origin = _origin(host, [key, *related])
            yield Problem(host.name, key, message, origin or "defaults")


def _shared_problems(topology: Topology) -> Iterator[Problem]:
    """Keys every host must agree on: the most common value is taken as the intended one."""
    for key in schema.SHARED_KEYS:
        values = [repr(host.data.get(key)) for host in topology]
        if len(set(values)) < 2:
            continue
        common = max(set(values), key=values.count)
        for host, value in zip(topology, values, strict=True):
            if value != common:
                yield Problem(host.name, key, "differs from the other hosts' value")


def _redis_problems(topology: Topology) -> Iterator[Problem]:
    replicas = len(topology.group("redis")) - 1
    for host in topology.group("redis"):
        wanted = host.data["redis_min_replicas_to_write"]
        if wanted > replicas:
            yield Problem(
                host.name,
                "redis_min_replicas_to_write",
                f"{wanted} with {replicas} replicas: the master would refuse every write",
            )


def _drained_problems(topology: Topology) -> Iterator[Problem]:
    """A drained host is an app host: the gateway's upstreams hold no other."""
    apps = {host.name for host in topology.group("app")}
    for host in topology.group("gateway"):
        for name in host.data.get("gateway_drained_hosts") or []:
            if name not in apps:
                yield Problem(
                    host.name,
                    "gateway_drained_hosts",
                    f"{name!r} is not an app host (app: {', '.join(sorted(apps)) or 'none'})",
                )


def _address_problems(topology: Topology) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    for host in topology:
        raw = host.data.get("private_address")
        if not raw:
            yield Problem(host.name, "private_address", "missing")
            continue
        try:
            address = ipaddress.ip_address(str(raw))
        except ValueError:
            yield Problem(host.name, "private_address", f"{raw!r} is not an IP address")
            continue
        # Redis, Postgres and the services bind it: it must not be the Internet's,
        # nor every address (0.0.0.0), nor one the templates cannot write (IPv6).
        if address.version != 4:
            yield Problem(host.name, "private_address", f"{address} is not an IPv4 address")
        elif not address.is_private or address.is_unspecified or address.is_loopback:
            yield Problem(
                host.name, "private_address", f"{address} is not a private unicast address"
            )
        if str(address) in seen:
            yield Problem(
                host.name,
                "private_address",
                f"{address} is also the address of {seen[str(address)]}",
            )
        else:
            seen[str(address)] = host.name


def _port_problems(topology: Topology) -> Iterator[Problem]:
    app_hosts = {host.name for host in topology.group("app")}
    for host in topology:
        used: dict[int, str] = {}
        ports = [(key, host.data.get(key)) for key in defaults.PORT_KEYS]
        if host.name in app_hosts:
            # The services listen on every app host beside its pooler and router.
            ports += [(f"services[{s['name']}].port", s["port"]) for s in host.data["services"]]
        for key, port in ports:
            if port is None:
                # A listener documented as off when None (gateway_internal_http_port).
                continue
            if port in used:
                origin = _origin(host, [key, used[port]]) or "defaults"
                yield Problem(host.name, key, f"port {port} is also {used[port]}", origin)
            else:
                used[port] = key


def _sentinel_problems(topology: Topology) -> Iterator[Problem]:
    sentinels = topology.group("sentinel")
    for host in sentinels:
        quorum = host.data["sentinel_quorum"]
        count = len(sentinels)
        if quorum <= count // 2 or quorum > count:
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


def _shown_path(path: str | Path) -> str:
    # Relative to where the command runs, as the user typed it, when it is below.
    absolute = Path(path).resolve()
    return (
        str(absolute.relative_to(Path.cwd())) if absolute.is_relative_to(Path.cwd()) else str(path)
    )


def _with_file(topology: Topology, problem: Problem) -> Problem:
    """Name the file that set the problem's key: the one to edit."""
    if problem.file:
        return replace(problem, file=_shown_path(problem.file))
    if problem.host == INVENTORY_WIDE or problem.key == "host name":
        return replace(problem, file=_shown_path(topology.path))
    try:
        host = topology.host(problem.host)
    except SeawallError:
        return problem
    root = problem.key.split("[")[0].split(".")[0].removeprefix("secret ")
    origin = host.origins.get(root)
    if origin is None and problem.key.startswith("secret "):
        origin = host.origins.get("secrets_file")
    return replace(problem, file=_shown_path(origin) if origin else "defaults")


def _once(topology: Topology, problems: list[Problem]) -> list[Problem]:
    """A mistake in a group data file is said once, not once per host of the group."""
    said: set[tuple[str | None, str, str]] = set()
    out = []
    for problem in problems:
        shared = problem.file not in (None, _shown_path(topology.path))
        if shared and (problem.file, problem.key, problem.message) in said:
            continue
        said.add((problem.file, problem.key, problem.message))
        out.append(problem)
    return out


def validate(topology: Topology, check_secrets: bool = True) -> list[Problem]:
    """Return every problem in the inventory; an empty list means it is usable.

    Values of the wrong type stop the checks that would read them: the problems
    then list the names, groups and keys, and the rest follows once they are fixed.
    """
    found = [
        problem
        for check in (_role_problems, _group_member_problems, _host_name_problems)
        for problem in check(topology)
    ]
    typed = list(_key_problems(topology))
    found += typed
    if not typed:
        later = [
            _address_problems,
            _port_problems,
            _sentinel_problems,
            _shared_problems,
            _redis_problems,
            _drained_problems,
            _relation_problems,
            _admin_key_problems,
        ]
        if check_secrets:
            later.append(_secret_problems)
        found += [problem for check in later for problem in check(topology)]
    return _once(topology, [_with_file(topology, problem) for problem in found])


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


def checked_inventory() -> Path | None:
    """The inventory file this process checked before connecting (None: none, or several).

    The inventory calls :func:`check_before_connect` with its own path, so a
    deploy that needs the file (the ops deploy copies it) finds it here: pyinfra
    runs deploys in greenlets, where its command-line context is not current.
    """
    return Path(next(iter(_checked))) if len(_checked) == 1 else None


def check_before_connect(inventory_file: str) -> None:
    """Validate the inventory from inside the inventory file, before pyinfra connects.

    pyinfra executes the inventory file before it opens any connection, so an
    inventory that calls this stops a bad deploy before it touches a host: the
    problems (or the one line of a Python error) on stderr, exit 2, no traceback.
    Called first in the file, it also catches a Python error in the rest of it.
    """
    if _loading.get():
        return
    resolved = str(Path(inventory_file).resolve())
    if resolved in _checked:
        return
    try:
        check(inventory_file)
    except SeawallError as error:
        print(f"seawall: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    _checked.add(resolved)
