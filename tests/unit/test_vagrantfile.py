"""The Vagrantfile: valid for Vagrant, and its hosts and addresses are the inventory's.

Needs the `vagrant` and `vagrant-lxc` packages (CI installs both): a missing
Vagrant fails these tests rather than skipping them.
"""

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seawall.errors import SeawallError
from seawall.inventory import load
from seawall.lab.config import lab_config
from seawall.lab.vagrant import CONTAINER_PREFIX, hosts_json, mac_address, main

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventories" / "lab.py"


def vagrant(args: list[str], tmp_path: Path, inventory: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        SEAWALL_INVENTORY=str(inventory),
        SEAWALL_PYTHON=sys.executable,
        VAGRANT_CWD=str(REPO),
        # Keep the checkout free of .vagrant/ and never phone home.
        VAGRANT_DOTFILE_PATH=str(tmp_path / "dotfile"),
        VAGRANT_CHECKPOINT_DISABLE="1",
        # Validate the lxc provider's block, whatever else is installed.
        VAGRANT_DEFAULT_PROVIDER="lxc",
    )
    return subprocess.run(
        ["vagrant", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_vagrant_validate(tmp_path: Path):
    result = vagrant(["validate"], tmp_path, LAB_INVENTORY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_vagrantfile_takes_its_machines_from_the_inventory(tmp_path: Path):
    other = tmp_path / "inventory"
    other.mkdir()
    (other / "group_data").symlink_to(REPO / "inventories" / "group_data")
    (other / "two.py").write_text(
        'lab = [("alpha", {"private_address": "10.77.0.61"}),'
        ' ("beta", {"private_address": "10.77.0.62"})]\n'
    )
    result = vagrant(["status", "--machine-readable"], tmp_path, other / "two.py")
    assert result.returncode == 0, result.stdout + result.stderr
    states = re.findall(r"^\d*,([^,]+),provider-name,(\w+)$", result.stdout, re.MULTILINE)
    assert states == [("alpha", "lxc"), ("beta", "lxc")]


def test_vagrantfile_states_no_address():
    text = (REPO / "Vagrantfile").read_text()
    assert not re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text)


def test_hosts_json_is_the_lab_inventory():
    topology = load(LAB_INVENTORY)
    data = hosts_json(topology)
    assert [(h["name"], h["address"]) for h in data["hosts"]] == [
        (host.name, host.address) for host in topology
    ]
    assert data["bridge"] == topology.value("lab_bridge")
    assert data["prefix"] == topology.value("lab_prefix_length")
    assert data["box_file"].startswith(str(topology.value("lab_state_dir")))
    for host in data["hosts"]:
        # The lab manages every container named with its own prefix.
        assert not host["container"].startswith(str(topology.value("lab_container_prefix")))
        assert host["container"] == CONTAINER_PREFIX + host["name"]
        assert "lab" in host["groups"]


def test_machine_macs_are_pinned_unique_and_not_the_labs():
    topology = load(LAB_INVENTORY)
    macs = [host["mac"] for host in hosts_json(topology)["hosts"]]
    assert len(set(macs)) == len(macs)
    assert not set(macs) & {host.hwaddr for host in lab_config(topology).hosts}
    first = int(macs[0].split(":")[0], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast
    assert mac_address("10.77.0.51") == "06:56:0a:4d:00:33"


def test_hosts_json_rejects_an_address_off_the_bridge(tmp_path: Path):
    (tmp_path / "group_data").symlink_to(REPO / "inventories" / "group_data")
    (tmp_path / "off.py").write_text('lab = [("stray", {"private_address": "10.99.0.5"})]\n')
    with pytest.raises(SeawallError, match="stray: private_address: 10.99.0.5 is not in"):
        hosts_json(load(tmp_path / "off.py"))


def test_module_prints_json_and_exits_2_on_a_bad_inventory(capsys, tmp_path: Path):
    assert main([str(LAB_INVENTORY)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert all(ipaddress.ip_address(host["address"]) for host in printed["hosts"])
    assert main([str(tmp_path / "missing.py")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_vagrant_inventory_is_the_labs_topology_at_addresses_of_its_own():
    lab = load(LAB_INVENTORY)
    machines = load(REPO / "inventories" / "vagrant.py")
    assert {h.name: h.roles for h in machines} == {h.name: h.roles for h in lab}
    assert not {h.address for h in machines} & {h.address for h in lab}
    network = lab_config(lab).network
    assert all(ipaddress.IPv4Address(h.address) in network for h in machines)
    # Host keys of its own: a machine recreated at an address gets a new one.
    data = hosts_json(machines)
    assert data["known_hosts"] != str(lab.value("ssh_known_hosts_file"))


def test_vagrant_up_ends_with_the_site_deploy_and_verify():
    # The lab test (tests/lab/test_vagrant.py) runs it; this pins the trigger's commands.
    text = (REPO / "Vagrantfile").read_text()
    assert '"deploys/site.py"' in text
    assert '"verify", "-i", inventory, "--settle"' in text
    assert 'inventories", "vagrant.py"' in text
