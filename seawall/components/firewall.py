"""A firewall per role: ``deploy_firewall()``, right after the common baseline.

What it guarantees on every host:

- Debian's ``nftables`` is installed, and seawall owns exactly one table,
  ``inet seawall``: its input chain drops by default and accepts replies,
  loopback, essential ICMP/ICMPv6, and each port this host serves
  (``FIREWALL_SERVED_BY``) from the sources its ``firewall_rules`` entry names
  only (roles: their hosts' private addresses; ``admin``:
  ``firewall_admin_sources``; ``any``);
- the ruleset (``/etc/seawall/firewall.nft``) is installed only once ``nft -c``
  accepts it: a rejected one leaves the old file and the live table as they were;
- a changed ruleset replaces the live table in one ``nft -f`` (atomic), after the
  live table is saved and a timer armed to restore it in
  ``firewall_rollback_seconds``; the timer is cancelled only once a new TCP
  connection from the deploy reaches the host's sshd, so a ruleset that locks
  the deploy out undoes itself;
- ``seawall-firewall.service`` loads the file at boot, before the network.

What it never does:

- flush the whole ruleset or touch any other table (Docker's, a lab's);
  Debian's ``nftables.service`` (which flushes everything) is left off;
- load a ruleset that is already live (the table's comment names its digest),
  so a second deploy changes nothing;
- filter forwarded or outgoing traffic.
"""

import hashlib
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import python

from seawall import defaults
from seawall.components.common import install_packages, unit_dropin
from seawall.components.templates import render
from seawall.defaults import FIREWALL, FIREWALL_SERVED_BY, SSH_PORT
from seawall.facts import memo
from seawall.facts.firewall import FirewallState
from seawall.operations import files, systemd
from seawall.operations.files import validated_file
from seawall.operations.firewall import rollback_cancelled, ruleset_loaded
from seawall.settings import Data, setting

CONCERN = "firewall"
RULESET = "/etc/seawall/firewall.nft"
UNIT = "seawall-firewall.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
TEMPLATES: tuple[str, ...] = (RULESET, UNIT_PATH)
PACKAGES = ["nftables"]
# Rule keys whose port is sshd's, not a `*_port` setting.
SSH_KEYS = ("ssh", "pgbackrest_ssh")
# How long the deploy's probe of a host's sshd may take (connect, then banner).
PROBE_TIMEOUT_S = 10.0


class Member(Protocol):
    """A host as pyinfra's inventory and ``seawall.inventory.Topology`` both give it."""

    @property
    def name(self) -> str: ...

    @property
    def groups(self) -> Sequence[str]: ...

    @property
    def data(self) -> Data: ...


@dataclass(frozen=True)
class Rule:
    """One port rule as this host renders it: what it opens, to whom."""

    key: str
    ports: tuple[int, ...]
    # The sources as firewall_rules names them.
    roles: tuple[str, ...]
    # Open to every address (the public edge).
    any: bool
    # The addresses and networks the roles and admin sources stand for, per family.
    v4: tuple[str, ...]
    v6: tuple[str, ...]

    @property
    def dport(self) -> str:
        """The ports as nft writes them: one, or an anonymous set."""
        if len(self.ports) == 1:
            return str(self.ports[0])
        return "{ " + ", ".join(str(port) for port in self.ports) + " }"


def serves(key: str, groups: Iterable[str]) -> bool:
    """Whether a host in ``groups`` listens on rule ``key``'s port (FIREWALL_SERVED_BY).

    Raises:
        KeyError: ``key`` has no entry there (validation reports it first).
    """
    served = FIREWALL_SERVED_BY[key]
    return served is None or any(group in served for group in groups)


def ports(key: str, data: Data) -> tuple[int, ...]:
    """Return the ports rule ``key`` opens on a host with ``data`` (none for a port set to None)."""
    if key in SSH_KEYS:
        return (SSH_PORT,)
    if key == "services":
        return tuple(sorted({int(service["port"]) for service in setting(data, "services")}))
    value = setting(data, key)
    return () if value is None else (int(value),)


def _shown(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    whole = network.prefixlen == network.max_prefixlen
    return str(network.network_address) if whole else str(network)


def sources(
    names: Sequence[str], members: Iterable[Member], admin: Sequence[str]
) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """Return (open to any, IPv4 sources, IPv6 sources) that source ``names`` stand for."""
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    hosts = list(members)
    for name in names:
        if name == "any":
            return True, (), ()
        if name == "admin":
            networks += [ipaddress.ip_network(str(cidr), strict=False) for cidr in admin]
            continue
        networks += [
            ipaddress.ip_network(str(member.data.get("private_address")))
            for member in hosts
            if name in member.groups
        ]
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return False, _disjoint(v4), _disjoint(v6)


def _disjoint(networks: Sequence[Any]) -> tuple[str, ...]:
    """Return networks of one family sorted, once each, none inside another.

    nft refuses overlapping elements (an admin network holding a host's address);
    neighbours stay apart, so each host still reads as itself.
    """
    unique = sorted(set(networks), key=lambda n: (n.network_address, n.prefixlen))
    kept = [n for n in unique if not any(n != o and n.subnet_of(o) for o in unique)]
    return tuple(_shown(n) for n in kept)


def host_rules(groups: Sequence[str], data: Data, members: Iterable[Member]) -> list[Rule]:
    """Return the rules of a host in ``groups``: every port it serves, in firewall_rules order."""
    hosts = list(members)
    admin = list(setting(data, "firewall_admin_sources"))
    out = []
    for key, names in setting(data, "firewall_rules").items():
        if not serves(key, groups):
            continue
        opened = ports(key, data)
        if not opened:
            continue
        is_any, v4, v6 = sources(names, hosts, admin)
        out.append(Rule(key, opened, tuple(names), is_any, v4, v6))
    return out


def ruleset(
    name: str, groups: Sequence[str], data: Data, members: Iterable[Member]
) -> tuple[str, str]:
    """Return (the ruleset file of host ``name``, the comment naming it in the live table).

    The comment carries a digest of the file's content, so the live table says
    which ruleset it was loaded from.
    """
    context: dict[str, Any] = {
        "host": name,
        "roles": [role for role in defaults.ROLES if role in groups],
        "rules": host_rules(groups, data, members),
        "comment": "seawall",
    }
    digest = hashlib.sha256(render(CONCERN, RULESET, context).encode()).hexdigest()[:16]
    context["comment"] = f"seawall {digest}"
    return render(CONCERN, RULESET, context), context["comment"]


def unit(context: Mapping[str, Any] | None = None) -> str:
    """Return the boot unit that loads the ruleset file."""
    return render(CONCERN, UNIT_PATH, {"ruleset": RULESET, **(context or {})})


def ssh_answers(address: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Open a new TCP connection to sshd at ``address``:``port`` and read its banner.

    Raises:
        DeployError: no banner within ``timeout``: the new ruleset shuts the
            deploy out, and the pending rollback must be left to restore the old one.
    """
    try:
        with socket.create_connection((address, port), timeout=timeout) as connection:
            connection.settimeout(timeout)
            banner = connection.recv(256)
    except OSError as error:
        raise DeployError(
            f"{address}:{port}: no new SSH connection under the new firewall ({error}); "
            "its rollback restores the previous table"
        ) from None
    if not banner.startswith(b"SSH-"):
        raise DeployError(f"{address}:{port}: answered, but not as sshd ({banner[:40]!r})")


@deploy("Firewall", data_defaults=FIREWALL)
def deploy_firewall() -> None:
    """
    Give this host its role's firewall: install, then configure, then activate.

    **Example:**

    .. code:: python

        from seawall.components.firewall import deploy_firewall

        deploy_firewall()
    """
    content, comment = ruleset(host.name, list(host.groups), host.data, list(inventory))
    pending = bool(memo.get_fact(host, FirewallState)["rollback_pending"])

    install_packages("Install nftables (Debian's unit stays off: it flushes every table)", PACKAGES)

    files.directory(
        name="Keep seawall's configuration directory",
        path="/etc/seawall",
        user="root",
        group="root",
        mode="755",
    )
    validated_file(
        name="Install the firewall ruleset (checked by nft -c first)",
        src=content,
        dest=RULESET,
        validate="nft -c -f {path}",
        mode=644,
    )
    unit_dropin("Install the unit that loads the firewall at boot", unit(), UNIT_PATH, UNIT)
    systemd.service(
        name="Load the firewall at every boot",
        service=UNIT,
        # Started by the load below, not here: that one arms the rollback first.
        running=None,
        enabled=True,
    )

    rollback = setting(host.data, "firewall_rollback_seconds")
    loaded = ruleset_loaded(
        name=f"Load the firewall ruleset (rolled back in {rollback} s unless confirmed)",
        path=RULESET,
        comment=comment,
        rollback_seconds=rollback,
    )
    if loaded.will_change or pending:
        address = str(host.data.get("ssh_hostname") or host.name)
        port = int(host.data.get("ssh_port") or SSH_PORT)
        python.call(
            name="Check that a new SSH connection still reaches this host",
            function=ssh_answers,
            address=address,
            port=port,
        )
    rollback_cancelled(
        name="Keep the firewall ruleset (cancel its rollback)",
        comment=comment,
        scheduled=loaded.will_change,
    )
