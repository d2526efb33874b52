"""The lab itself: hosts, isolation, leftovers, faults, and a clean `down`."""

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from seawall import lab
from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.lab import faults, hosts, network
from seawall.lab.config import lab_config
from seawall.ssh import run as ssh


def test_every_host_runs_systemd_and_answers_ssh(lab_topology: Topology) -> None:
    config = lab_config(lab_topology)
    for host in config.hosts:
        # --wait: a host still booting (a drill's restore) is not yet an answer.
        result = ssh(
            lab_topology, host.name, "timeout 60 systemctl is-system-running --wait; hostname"
        )
        assert result.returncode == 0, result.stderr
        state, name = result.stdout.split()
        if state != "running":
            # Name the unit that failed and why, so the fault is found where it is.
            failed = ssh(
                lab_topology,
                host.name,
                "systemctl --failed --no-legend --plain; "
                "journalctl -b --no-pager -n 30 -p warning -o short-iso",
            )
            pytest.fail(f"{host.name}: systemd is {state}\n{failed.stdout}")
        assert name == host.name


def test_hosts_are_at_their_inventory_addresses(lab_topology: Topology) -> None:
    for host in lab_topology:
        out = ssh(lab_topology, host.name, "ip -4 -o addr show dev eth0").stdout
        assert f" {host.address}/" in out


def test_known_hosts_is_the_labs_own(lab_topology: Topology) -> None:
    config = lab_config(lab_topology)
    lines = config.known_hosts.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(h.address for h in config.hosts)
    assert str(config.known_hosts).startswith(str(config.state_dir))


def test_secrets_file_is_private(lab_topology: Topology) -> None:
    config = lab_config(lab_topology)
    assert config.secrets_file.stat().st_mode & 0o777 == 0o600


def test_hosts_reach_the_apt_proxy_and_nothing_else(lab_topology: Topology) -> None:
    config = lab_config(lab_topology)
    probe = (
        "for target in {proxy}/{port} {proxy}/22 {peer}/22; do "
        'timeout 3 bash -c "</dev/tcp/${{target%/*}}/${{target#*/}}" 2>/dev/null '
        "&& echo open || echo closed; done"
    ).format(
        proxy=config.bridge_address, port=config.apt_proxy_port, peer=config.host("data-2").address
    )
    # From the ops host: the firewall (once deployed) lets it reach every host's sshd.
    out = ssh(lab_topology, "ops-1", probe).stdout.split()
    # The proxy answers; the controller's own sshd does not; other lab hosts do.
    assert out == ["open", "closed", "open"]
    # No route off the bridge at all.
    route = ssh(lab_topology, "ops-1", "ip route get 1.1.1.1 2>&1 || true").stdout
    assert "unreachable" in route


def test_guard_ruleset_drops_traffic_leaving_the_bridge(lab_topology: Topology) -> None:
    config = lab_config(lab_topology)
    listed = subprocess.run(
        ["nft", "list", "table", "inet", config.guard_table],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f'iifname "{config.bridge}" oifname != "{config.bridge}" drop' in listed


def _ssh_open(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1):
            return True
    except OSError:
        return False


def test_up_repairs_stopped_and_frozen_hosts(lab_topology: Topology) -> None:
    config = lab_config(lab_topology)
    faults.crash(config, "app-2")
    faults.freeze(config, "gw-1")
    assert hosts.state(config.host("app-2")) == "STOPPED"
    assert hosts.state(config.host("gw-1")) == "FROZEN"
    started = time.monotonic()
    report = lab.up(lab_topology, log=lambda _: None)
    assert report.ok
    assert time.monotonic() - started < 60
    assert hosts.state(config.host("gw-1")) == "RUNNING"


def test_partition_drops_only_the_pair(lab_topology: Topology) -> None:
    config = lab_config(lab_topology)
    # sshd, probed from the ops host: the firewall (once deployed) lets it reach every host.
    check = "timeout 2 bash -c '</dev/tcp/{}/22' && echo open || echo closed"
    try:
        faults.partition(config, "ops-1", "data-2")
        assert (
            ssh(lab_topology, "ops-1", check.format(config.host("data-2").address)).stdout.strip()
            == "closed"
        )
        assert (
            ssh(lab_topology, "ops-1", check.format(config.host("gw-1").address)).stdout.strip()
            == "open"
        )
        assert any("partition" in fault for fault in faults.active_faults(config))
    finally:
        faults.restore(config)
    assert (
        ssh(lab_topology, "ops-1", check.format(config.host("data-2").address)).stdout.strip()
        == "open"
    )


def test_cut_takes_a_host_off_the_bridge(lab_topology: Topology) -> None:
    config = lab_config(lab_topology)
    address = config.host("ops-1").address
    try:
        faults.cut(config, "ops-1")
        assert not _ssh_open(address)
        assert "ops-1: cut off" in faults.active_faults(config)
    finally:
        faults.restore(config)
    assert _ssh_open(address)


def test_crashed_host_comes_back(lab_topology: Topology) -> None:
    config = lab_config(lab_topology)
    faults.crash(config, "ops-1")
    assert not _ssh_open(config.host("ops-1").address)
    faults.restore(config)
    assert ssh(lab_topology, "ops-1", "systemctl is-system-running").stdout.strip() == "running"


@contextmanager
def _broken_while_stopped(topology: Topology, name: str, path: str, text: str) -> Iterator[Path]:
    """Stop a host, plant a file in its overlay layer, and always undo both (lab up)."""
    config = lab_config(topology)
    faults.crash(config, name)
    planted = hosts.container_dir(config.host(name)) / path
    original = planted.read_bytes() if planted.exists() else None
    # A host not deployed yet has no such folder in its layer; 0755, as in the base.
    planted.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    planted.write_text(text)
    planted.chmod(0o755)
    try:
        yield planted
    finally:
        faults.crash(config, name)
        if original is None:
            planted.unlink()
        else:
            planted.write_bytes(original)
        report = lab.up(topology, log=lambda _: None)
        assert report.ok, report.summary()


def _restore_error(topology: Topology) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(SeawallError) as raised:
        faults.restore(lab_config(topology), wait=180)
    return str(raised.value), time.monotonic() - started


def test_a_host_lxc_refuses_fails_at_once_with_lxcs_reason(lab_topology: Topology) -> None:
    include = "lxc.include = /nonexistent/seawall-test.conf\n"
    config_file = hosts.container_dir(lab_config(lab_topology).host("ops-1")) / "config"
    with _broken_while_stopped(lab_topology, "ops-1", "config", config_file.read_text() + include):
        assert hosts.state(lab_config(lab_topology).host("ops-1")) == "BROKEN"
        message, elapsed = _restore_error(lab_topology)
    assert elapsed < 10, elapsed
    assert "ops-1: lxc-start refused seawall-ops-1 (state BROKEN)" in message
    assert "/nonexistent/seawall-test.conf" in message


def test_lab_up_rewrites_a_broken_container_config(lab_topology: Topology) -> None:
    config = lab_config(lab_topology)
    config_file = hosts.container_dir(config.host("app-2")) / "config"
    faults.crash(config, "app-2")
    config_file.write_text(config_file.read_text() + "lxc.include = /nonexistent/x.conf\n")
    assert hosts.state(config.host("app-2")) == "BROKEN"
    report = lab.up(lab_topology, log=lambda _: None)
    assert report.ok, report.summary()
    assert "/nonexistent" not in config_file.read_text()


def test_a_host_whose_init_dies_is_named_at_once(lab_topology: Topology) -> None:
    failing_init = "#!/bin/sh\necho 'seawall test: this init gives up' >&2\nexit 1\n"
    with _broken_while_stopped(lab_topology, "ops-1", "delta/usr/sbin/init", failing_init):
        message, elapsed = _restore_error(lab_topology)
    assert elapsed < 20, elapsed
    assert "ops-1: container STOPPED while booting" in message


def test_a_host_without_sshd_names_the_stage_it_reached(lab_topology: Topology) -> None:
    drop_in = "delta/etc/ssh/sshd_config.d/zz-seawall-test.conf"
    with _broken_while_stopped(lab_topology, "ops-1", drop_in, "NoSuchOption yes\n"):
        message, elapsed = _restore_error(lab_topology)
    assert elapsed < 60, elapsed
    assert "ops-1: booted, ssh.service failed, nothing listening on port 22" in message


@pytest.mark.teardown_last
def test_lab_down_leaves_nothing(lab_topology: Topology) -> None:
    config = lab_config(lab_topology)
    report = lab.down(lab_topology, log=lambda _: None)
    assert not report.bridge_present
    assert not report.guard_present
    assert report.proxy_pid is None
    assert all(host.state == "ABSENT" for host in report.hosts)
    containers = subprocess.run(["lxc-ls", "-1"], capture_output=True, text=True).stdout.split()
    prefix = str(lab_topology.value("lab_container_prefix"))
    assert not [name for name in containers if name.startswith(prefix)]
    assert not network.bridge_exists(config)
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert config.guard_table not in tables
    assert config.fault_table not in tables
    # No live proxy of this lab (a zombie left unreaped by this machine's PID 1 is not one).
    procs = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    ours = str(config.state_dir / "apt-proxy")
    assert not [line for line in procs.splitlines() if ours in line and line[0] != "Z"]


def test_status_command_reports_every_host(lab_topology: Topology) -> None:
    from typer.testing import CliRunner

    from seawall.cli import app

    result = CliRunner().invoke(app, ["lab", "status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {(h["name"], h["address"], h["state"]) for h in report["hosts"]} == {
        (host.name, host.address, "RUNNING") for host in lab_topology
    }
