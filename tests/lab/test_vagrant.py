"""The Vagrantfile on the lab bridge: two lxc machines from the lab's box, deployed via @vagrant.

The machines have an inventory of their own (two hosts at addresses no lab host
uses, in the `lab` group so its group data applies), so they run beside the lab
and never touch its hosts. They are destroyed at the end, whatever happened.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from seawall.inventory import Topology, load
from seawall.lab.config import lab_config
from seawall.lab.vagrant import CONTAINER_PREFIX, build_box, hosts_json

REPO = Path(__file__).resolve().parents[2]

# Free addresses on the lab's own network (its hosts use .11 to .41), from its inventory.
_NETWORK = lab_config(load(REPO / "inventories" / "lab.py")).network
MACHINES = {
    "vagrant-1": str(_NETWORK.network_address + 51),
    "vagrant-2": str(_NETWORK.network_address + 52),
}

LXC_PATH = Path("/var/lib/lxc")


@dataclass
class VagrantLab:
    topology: Topology
    env: dict[str, str]
    deploy_inventory: Path
    known_hosts: Path
    box: Path
    timings: dict[str, float] = field(default_factory=dict)


def run(
    command: list[str], env: dict[str, str], timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def write_inventory(directory: Path, group_data: Path, hosts: dict[str, dict[str, Any]]) -> Path:
    """Write an inventory of `lab` hosts whose group data is the lab inventory's own."""
    directory.mkdir(parents=True)
    # pyinfra and seawall.inventory read the inventory's own group_data/.
    (directory / "group_data").symlink_to(group_data)
    lines = ['"""Vagrant machines of tests/lab/test_vagrant.py."""', "", "lab = ["]
    lines += [f"    ({name!r}, {data!r})," for name, data in hosts.items()]
    lines += ["]", ""]
    path = directory / "vagrant_lab.py"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def remove_stale_containers(env: dict[str, str]) -> None:
    """Remove this test's own containers left by an interrupted run (exact names only)."""
    for name in MACHINES:
        container = CONTAINER_PREFIX + name
        if (LXC_PATH / container / "config").exists():
            run(["lxc-stop", "-k", "-n", container], env, timeout=60, check=False)
            run(["lxc-destroy", "-n", container], env, timeout=120)


def vagrant_ssh(lab: VagrantLab, name: str, command: str) -> str:
    return run(["vagrant", "ssh", name, "-c", command], lab.env, timeout=60).stdout


@pytest.fixture(scope="module")
def vagrant_lab(
    lab_topology: Topology, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VagrantLab]:
    lab_addresses = {host.address for host in lab_topology}
    assert not lab_addresses & set(MACHINES.values()), "test addresses collide with the lab's"
    work = tmp_path_factory.mktemp("vagrant")
    group_data = lab_topology.path.resolve().parent / "group_data"

    # What the Vagrantfile reads: hosts reached at their own address, as in the lab.
    inventory = write_inventory(
        work / "inventory",
        group_data,
        {name: {"private_address": ip, "ssh_hostname": ip} for name, ip in MACHINES.items()},
    )
    # What pyinfra deploys to: the same hosts through the @vagrant connector (which
    # supplies user, key and port). Host data overrides the lab's known_hosts: these
    # machines draw new host keys at every creation.
    known_hosts = work / "known_hosts"
    reach = {"ssh_known_hosts_file": str(known_hosts), "ssh_strict_host_key_checking": "accept-new"}
    deploy_inventory = write_inventory(
        work / "deploy",
        group_data,
        {f"@vagrant/{name}": {"private_address": ip, **reach} for name, ip in MACHINES.items()},
    )

    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
        SEAWALL_INVENTORY=str(inventory),
        SEAWALL_PYTHON=sys.executable,
        VAGRANT_CWD=str(REPO),
        # Machine state and boxes of this run stay in its temporary directory.
        VAGRANT_DOTFILE_PATH=str(work / "dotfile"),
        VAGRANT_HOME=str(work / "vagrant.d"),
        VAGRANT_DEFAULT_PROVIDER="lxc",
        VAGRANT_CHECKPOINT_DISABLE="1",
    )
    topology = load(inventory)
    assert [host["address"] for host in hosts_json(topology)["hosts"]] == list(MACHINES.values())
    started = time.monotonic()
    box = build_box(topology)
    timings = {"box": time.monotonic() - started}
    lab = VagrantLab(topology, env, deploy_inventory, known_hosts, box, timings)

    remove_stale_containers(env)
    try:
        started = time.monotonic()
        run(["vagrant", "up", "--provider=lxc"], env, timeout=600)
        lab.timings["vagrant up"] = time.monotonic() - started
        yield lab
    finally:
        started = time.monotonic()
        try:
            destroyed = run(["vagrant", "destroy", "-f"], env, timeout=300, check=False)
        finally:
            # Whatever vagrant did, this run's containers go (by their exact names).
            remove_stale_containers(env)
            # The added box is a ~100 MB copy; pytest keeps its last temporary directories.
            shutil.rmtree(work / "vagrant.d", ignore_errors=True)
        lab.timings["vagrant destroy"] = time.monotonic() - started
        print(f"\nvagrant timings (s): { {k: round(v, 1) for k, v in lab.timings.items()} }")
        assert destroyed.returncode == 0, destroyed.stderr


def test_box_is_a_vagrant_lxc_box_and_the_base_is_untouched(vagrant_lab: VagrantLab):
    with tarfile.open(vagrant_lab.box) as box:
        assert sorted(box.getnames()) == ["lxc-config", "metadata.json", "rootfs.tar.gz"]
        metadata = box.extractfile("metadata.json")
        assert metadata is not None
        assert json.load(metadata)["provider"] == "lxc"
        rootfs = box.extractfile("rootfs.tar.gz")
        assert rootfs is not None
        with tarfile.open(fileobj=rootfs, mode="r|gz") as tree:
            # vagrant-lxc unpacks with --strip-components=2.
            modes = {
                member.name: member.mode
                for member in tree
                if member.name.startswith(("./rootfs/home/vagrant/", "./rootfs/etc/sudoers.d/"))
            }
    assert modes["./rootfs/home/vagrant/.ssh/authorized_keys"] == 0o600
    assert modes["./rootfs/etc/sudoers.d/vagrant"] == 0o440
    base = Path(str(vagrant_lab.topology.value("lab_state_dir"))) / "base" / "rootfs"
    assert not (base / "home" / "vagrant").exists()
    assert not (base / "etc" / "sudoers.d" / "vagrant").exists()


def test_machines_sit_on_the_lab_bridge_at_their_inventory_address(vagrant_lab: VagrantLab):
    for name, address in MACHINES.items():
        out = vagrant_ssh(vagrant_lab, name, "hostname; ip -4 -o addr show dev eth0")
        hostname, addresses = out.split("\n", 1)
        assert hostname.strip() == name
        assert f"inet {address}/24 " in addresses


def _grand_total(output: str) -> dict[str, str]:
    match = re.search(r"Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    assert match, output[-2000:]
    return dict(zip(("hosts", "success", "error", "no change"), match.groups(), strict=True))


def test_common_deploy_through_the_vagrant_connector(vagrant_lab: VagrantLab):
    pyinfra = [
        str(Path(sys.executable).parent / "pyinfra"),
        "-y",
        # The connector logs in as vagrant; the deploy needs root.
        "--sudo",
        str(vagrant_lab.deploy_inventory),
        "deploys/common.py",
    ]
    started = time.monotonic()
    run(pyinfra, vagrant_lab.env, timeout=600)
    vagrant_lab.timings["deploy"] = time.monotonic() - started
    again = run(pyinfra, vagrant_lab.env, timeout=600)
    # pyinfra prints its results table on stderr.
    second = _grand_total(again.stdout + again.stderr)
    assert second["success"] == "-" and second["error"] == "-", f"second run changed: {second}"

    apt_proxy = vagrant_lab.topology.value("apt_proxy")
    admin = str(vagrant_lab.topology.value("admin_user"))
    for name, address in MACHINES.items():
        # The lab group's data reached the deploy: its apt proxy ...
        proxy = vagrant_ssh(vagrant_lab, name, "cat /etc/apt/apt.conf.d/01seawall-proxy")
        assert f'"{apt_proxy}"' in proxy
        # ... and its admin key: the admin logs in with the lab's key and has sudo.
        login = run(
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                f"UserKnownHostsFile={vagrant_lab.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-i",
                str(vagrant_lab.topology.value("ssh_key")),
                f"{admin}@{address}",
                "sudo -n id -un",
            ],
            vagrant_lab.env,
            timeout=60,
        )
        assert login.stdout.strip() == "root"
