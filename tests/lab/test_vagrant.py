"""`vagrant up --provider=lxc` ends with the whole site deployed and verified.

The machines are those of inventories/vagrant.py: the production topology at
addresses of their own on the lab's bridge, so they never touch a lab host. To
spare the machine's two cores, the lab's hosts are stopped meanwhile (bridge,
guard and apt proxy stay) and started again after. The machines are destroyed
at the end, whatever happened. This module runs after every other lab test but
`lab down` (conftest orders it).
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from seawall.inventory import Topology, load
from seawall.lab import faults, hosts
from seawall.lab.config import lab_config
from seawall.lab.vagrant import CONTAINER_PREFIX, build_box, hosts_json
from tests.lab.conftest import ROOT, changed_operations

pytestmark = pytest.mark.late

VAGRANT_INVENTORY = ROOT / "inventories" / "vagrant.py"
BIN = Path(sys.executable).parent
LXC_PATH = Path("/var/lib/lxc")


@dataclass
class VagrantRun:
    topology: Topology
    env: dict[str, str]
    up: subprocess.CompletedProcess[str]
    timings: dict[str, float] = field(default_factory=dict)


def run(
    command: list[str], env: dict[str, str], timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def remove_stale_containers(topology: Topology, env: dict[str, str]) -> None:
    """Remove this inventory's machines left by an interrupted run (exact names only)."""
    for host in topology:
        container = CONTAINER_PREFIX + host.name
        if (LXC_PATH / container / "config").exists():
            run(["lxc-stop", "-k", "-n", container], env, timeout=60, check=False)
            run(["lxc-destroy", "-n", container], env, timeout=120)


@pytest.fixture(scope="module")
def vagrant_site(
    lab_topology: Topology, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VagrantRun]:
    topology = load(VAGRANT_INVENTORY)
    lab_addresses = {host.address for host in lab_topology}
    assert not lab_addresses & {host.address for host in topology}, "collides with the lab"
    work = tmp_path_factory.mktemp("vagrant")
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        SEAWALL_PYTHON=sys.executable,
        VAGRANT_CWD=str(ROOT),
        # Machine state and boxes of this run stay in its temporary directory.
        VAGRANT_DOTFILE_PATH=str(work / "dotfile"),
        VAGRANT_HOME=str(work / "vagrant.d"),
        VAGRANT_DEFAULT_PROVIDER="lxc",
        VAGRANT_CHECKPOINT_DISABLE="1",
    )
    config = lab_config(lab_topology)
    timings: dict[str, float] = {}
    started = time.monotonic()
    build_box(topology)
    timings["box"] = time.monotonic() - started
    remove_stale_containers(topology, env)
    # The lab's hosts rest meanwhile: fourteen hosts on two cores would only be slower.
    for host in config.hosts:
        hosts.stop(host)
    try:
        started = time.monotonic()
        up = run(["vagrant", "up", "--provider=lxc"], env, timeout=1800, check=False)
        timings["vagrant up (machines, site deploy, verify)"] = time.monotonic() - started
        yield VagrantRun(topology, env, up, timings)
    finally:
        started = time.monotonic()
        try:
            destroyed = run(["vagrant", "destroy", "-f"], env, timeout=300, check=False)
        finally:
            remove_stale_containers(topology, env)
            shutil.rmtree(work / "vagrant.d", ignore_errors=True)
            faults.restore(config, wait=180)
        timings["vagrant destroy"] = time.monotonic() - started
        print(f"\nvagrant timings (s): { {k: round(v, 1) for k, v in timings.items()} }")
        assert destroyed.returncode == 0, destroyed.stderr
        for host in topology:
            assert not (LXC_PATH / (CONTAINER_PREFIX + host.name)).exists(), host.name
        known_hosts = Path(hosts_json(topology)["known_hosts"])
        if known_hosts.exists():
            for host in topology:
                lookup = ["ssh-keygen", "-F", host.address, "-f", str(known_hosts)]
                assert subprocess.run(lookup, capture_output=True).returncode == 1, (
                    f"vagrant destroy left {host.name}'s host key in {known_hosts}"
                )


def test_vagrant_up_deploys_the_site_and_verifies_it(vagrant_site: VagrantRun) -> None:
    up = vagrant_site.up
    assert up.returncode == 0, up.stdout[-6000:] + up.stderr[-3000:]
    # The trigger ran the site deploy, then verify, which ends with its summary.
    assert "deploys/site.py" in up.stdout
    assert "checks hold" in up.stdout, up.stdout[-3000:]


def test_machines_are_the_inventorys_hosts_at_their_addresses(vagrant_site: VagrantRun) -> None:
    for host in vagrant_site.topology:
        out = run(
            ["vagrant", "ssh", host.name, "-c", "hostname; ip -4 -o addr show dev eth0"],
            vagrant_site.env,
            timeout=60,
        ).stdout
        hostname, addresses = out.split("\n", 1)
        assert hostname.strip() == host.name
        assert f"inet {host.address}/24 " in addresses


def test_a_second_deploy_changes_nothing_and_verify_holds(vagrant_site: VagrantRun) -> None:
    deploy = [str(BIN / "pyinfra"), "-y", "--json", str(VAGRANT_INVENTORY), "deploys/site.py"]
    started = time.monotonic()
    again = run(deploy, vagrant_site.env, timeout=900, check=False)
    vagrant_site.timings["second deploy"] = time.monotonic() - started
    assert changed_operations(again) == {}
    started = time.monotonic()
    verify = run(
        [str(BIN / "seawall"), "verify", "-i", str(VAGRANT_INVENTORY), "--json"],
        vagrant_site.env,
        timeout=300,
        check=False,
    )
    vagrant_site.timings["verify"] = time.monotonic() - started
    try:
        failing = json.loads(verify.stdout)["failures"]
    except (ValueError, KeyError):
        failing = None
    # The failures first: CI keeps only the start of a long message.
    assert verify.returncode == 0, f"{failing}\n{verify.stdout[-3000:]}{verify.stderr[-2000:]}"
    report = json.loads(verify.stdout)
    assert report["ok"] is True
    assert sorted(report["hosts"]) == sorted(host.name for host in vagrant_site.topology)


def test_box_is_a_vagrant_lxc_box_and_the_base_is_untouched(vagrant_site: VagrantRun) -> None:
    box = Path(hosts_json(vagrant_site.topology)["box_file"])
    with tarfile.open(box) as packed:
        assert sorted(packed.getnames()) == ["lxc-config", "metadata.json", "rootfs.tar.gz"]
        metadata = packed.extractfile("metadata.json")
        assert metadata is not None
        assert json.load(metadata)["provider"] == "lxc"
    base = Path(str(vagrant_site.topology.value("lab_state_dir"))) / "base" / "rootfs"
    assert not (base / "home" / "vagrant").exists()
    assert not (base / "etc" / "sudoers.d" / "vagrant").exists()
