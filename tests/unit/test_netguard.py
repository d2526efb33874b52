"""The network guard: lab traffic only once the lab's bridge is up, or from inside the lab."""

from pathlib import Path

import pytest

from seawall.errors import SeawallError
from seawall.inventory import Host, Topology
from seawall.netguard import is_lab_host, require_lab_network

LAB = {
    "lab_bridge": "swtest-absent0",
    "lab_bridge_address": "127.0.0.1",
    "lab_prefix_length": 8,
    "lab_state_dir": "/nonexistent",
}


def topology(*addresses: str, groups: tuple[str, ...] = ("lab",)) -> Topology:
    hosts = tuple(
        Host(f"host-{n}", groups, {**LAB, "private_address": address})
        for n, address in enumerate(addresses)
    )
    return Topology(Path("inventories/test.py"), hosts)


def test_a_host_holding_one_of_the_addresses_is_inside_the_lab() -> None:
    # 127.0.0.2 is this machine's (all of 127/8 is loopback); 127.0.0.1 too.
    assert is_lab_host(topology("127.0.0.2"))
    # A documentation address no interface here holds.
    assert not is_lab_host(topology("192.0.2.10"))


def test_inside_the_lab_no_bridge_is_needed() -> None:
    require_lab_network(topology("127.0.0.5", "127.0.0.6"))


def test_outside_the_lab_a_missing_bridge_refuses() -> None:
    lab = topology("127.0.0.5")
    outside = Topology(
        lab.path,
        tuple(
            Host(
                h.name,
                h.groups,
                {
                    **h.data,
                    "lab_bridge_address": "192.0.2.1",
                    "lab_prefix_length": 24,
                    "private_address": "192.0.2.10",
                },
            )
            for h in lab
        ),
    )
    with pytest.raises(SeawallError, match="lab bridge swtest-absent0 does not exist"):
        require_lab_network(outside)


def test_inside_the_lab_a_host_off_the_lab_network_still_refuses() -> None:
    # This machine holds 127.0.0.5, but 192.0.2.10 is not on the lab's 127/8.
    with pytest.raises(SeawallError, match="not on the lab network"):
        require_lab_network(topology("127.0.0.5", "192.0.2.10"))


def test_an_inventory_of_real_hosts_passes() -> None:
    require_lab_network(topology("192.0.2.10", groups=("app",)))
