"""The lab's settings, all read from the lab inventory's data."""

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.netguard import lab_network


@dataclass(frozen=True)
class LabHost:
    """One lab host: inventory name, address and the LXC names derived from them."""

    name: str
    address: str
    container: str
    veth: str
    hwaddr: str


@dataclass(frozen=True)
class LabConfig:
    topology: Topology
    state_dir: Path
    bridge: str
    bridge_address: str
    prefix_length: int
    apt_proxy_port: int
    mirror: str
    base_packages: tuple[str, ...]
    hosts: tuple[LabHost, ...]

    @property
    def ssh_key(self) -> Path:
        return Path(str(self.topology.value("ssh_key")))

    @property
    def known_hosts(self) -> Path:
        return Path(str(self.topology.value("ssh_known_hosts_file")))

    @property
    def secrets_file(self) -> Path:
        return Path(str(self.topology.value("secrets_file")))

    @property
    def base_rootfs(self) -> Path:
        return self.state_dir / "base" / "rootfs"

    @property
    def guard_table(self) -> str:
        """The nft table guarding this lab's bridge (one per bridge, so labs never clash)."""
        return f"seawall_{self.bridge}"

    @property
    def fault_table(self) -> str:
        return f"seawall_{self.bridge}_faults"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.bridge_address}/{self.prefix_length}", strict=False)

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(host.name for host in self.hosts)
        raise SeawallError(f"no lab host named {name!r} (hosts: {known})")


def _hwaddr(address: str) -> str:
    # Pinned MAC derived from the address: a new MAC at every start leaves a
    # stale ARP entry that blocks SSH for ~19 s (LAB-NOTES gotcha 2).
    octets = ipaddress.IPv4Address(address).packed
    return "02:5e:" + ":".join(f"{octet:02x}" for octet in octets)


def _veth(address: str) -> str:
    # From the address, not the name: two labs (e.g. the benchmark's) may share
    # host names, never addresses, and interface names are machine-wide.
    return "swv" + ipaddress.IPv4Address(address).packed[1:].hex()


def lab_config(topology: Topology) -> LabConfig:
    """Build the lab settings from a lab inventory.

    Raises:
        SeawallError: the inventory lacks lab data or a host is off the lab network.
    """
    lab_network(topology)
    bridge_address = str(topology.value("lab_bridge_address"))
    prefix = int(topology.value("lab_prefix_length"))
    prefix_name = str(topology.value("lab_container_prefix"))
    hosts = []
    for host in topology:
        hosts.append(
            LabHost(
                name=host.name,
                address=host.address,
                container=prefix_name + host.name,
                veth=_veth(host.address),
                hwaddr=_hwaddr(host.address),
            )
        )
    return LabConfig(
        topology=topology,
        state_dir=Path(str(topology.value("lab_state_dir"))),
        bridge=str(topology.value("lab_bridge")),
        bridge_address=bridge_address,
        prefix_length=prefix,
        apt_proxy_port=int(topology.value("lab_apt_proxy_port")),
        mirror=str(topology.value("lab_debian_mirror")),
        base_packages=tuple(topology.value("lab_base_packages")),
        hosts=tuple(hosts),
    )
