"""The guard in front of everything that reaches inventory hosts (SSH, Redis, HTTP).

A lab inventory's hosts sit behind the lab's own bridge on this machine. Until
that bridge is up with its address, their addresses could route anywhere, so
nothing is sent. An inventory of real hosts (no host in group ``lab``) passes.
Production commands run this guard too, so it lives outside ``seawall.lab`` and
reads the lab's keys from inventory data itself (``seawall.lab.config`` builds
the rest of the lab's settings on :func:`lab_network`).
"""

import ipaddress
import socket
from pathlib import Path

from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.local import run

LAB_KEYS = ("lab_bridge", "lab_bridge_address", "lab_prefix_length", "lab_state_dir")


def lab_network(topology: Topology) -> ipaddress.IPv4Network:
    """Return a lab inventory's network, once its lab keys are set and every host is on it.

    Raises:
        SeawallError: the inventory lacks lab data or a host is off the lab network.
    """
    for key in LAB_KEYS:
        if topology.value(key) is None:
            raise SeawallError(f"{topology.path}: {key} is missing: not a lab inventory")
    bridge_address = str(topology.value("lab_bridge_address"))
    prefix = int(topology.value("lab_prefix_length"))
    network = ipaddress.IPv4Network(f"{bridge_address}/{prefix}", strict=False)
    for host in topology:
        if ipaddress.ip_address(host.address) not in network:
            raise SeawallError(
                f"{host.name}: private_address: {host.address} is not on the lab network {network}"
            )
    return network


def bridge_exists(bridge: str) -> bool:
    return Path(f"/sys/class/net/{bridge}/bridge").is_dir()


def require_bridge(bridge: str, address: str) -> None:
    """Refuse to send lab traffic unless the lab's own bridge is up with its address.

    Raises:
        SeawallError: the bridge is missing (the lab is down) or lacks its address.
    """
    if not bridge_exists(bridge):
        raise SeawallError(f"lab bridge {bridge} does not exist: run `seawall lab up`")
    addresses = run(["ip", "-4", "-o", "addr", "show", "dev", bridge]).stdout
    if f" {address}/" not in addresses:
        raise SeawallError(f"lab bridge {bridge} lacks its address {address}")


def require_lab_bridge(topology: Topology) -> None:
    """Refuse to go on unless the lab inventory ``topology`` is valid and its bridge is up.

    Raises:
        SeawallError: lab data is missing or wrong, or the bridge is missing or lacks its address.
    """
    lab_network(topology)
    require_bridge(str(topology.value("lab_bridge")), str(topology.value("lab_bridge_address")))


def is_lab_host(topology: Topology) -> bool:
    """True when this machine holds one of the inventory's host addresses.

    Binding to an address succeeds only when one of this machine's interfaces
    has it: the ops host, running seawall inside the lab, sits on the lab's
    network itself (and has no bridge of its own).
    """
    for host in topology:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host.address, 0))
            except OSError:
                continue
            return True
    return False


def require_lab_network(topology: Topology) -> None:
    """For a lab inventory, refuse to send anything until the lab's own bridge is up.

    Inside the lab (this machine is one of its hosts, as the ops host running
    the drift cron and the restart timer is) the lab's network is this host's
    own: its traffic to the other hosts never leaves the lab's bridge.

    Raises:
        SeawallError: the bridge is missing or lacks its address.
    """
    if not any("lab" in host.groups for host in topology):
        return
    if not bridge_exists(str(topology.value("lab_bridge"))) and is_lab_host(topology):
        lab_network(topology)
        return
    require_lab_bridge(topology)
