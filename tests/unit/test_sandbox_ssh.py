"""sshd's drop-in (issue 14 item 5): who may log in, and no forwarding to pivot through.

Every account that logs in over SSH must stay in AllowUsers, or a deploy locks
it out: the deploy user, the admin, pgBackRest's two accounts, and on the
Vagrant machines the vagrant user.
"""

from pathlib import Path

import pytest

from seawall import inventory
from seawall.components import common

REPO = Path(__file__).resolve().parents[2]


def sshd(host: inventory.Host) -> list[str]:
    context = common.template_context(host.data, host.groups)
    return common.render(common.SSHD, context).splitlines()


def value(lines: list[str], keyword: str) -> str:
    found = [line.split(" ", 1)[1] for line in lines if line.startswith(keyword + " ")]
    assert len(found) == 1, (keyword, found)
    return found[0]


@pytest.mark.parametrize(
    ("name", "users"),
    [
        ("data-1", "root seawall postgres"),
        ("data-3", "root seawall"),
        ("app-1", "root seawall"),
        ("gw-1", "root seawall"),
        ("ops-1", "root seawall pgbackrest"),
    ],
)
def test_allow_users_are_the_accounts_that_log_in(
    lab: inventory.Topology, name: str, users: str
) -> None:
    host = lab.host(name)
    assert host.data["ssh_user"] == "root"
    assert value(sshd(host), "AllowUsers") == users


def test_the_vagrant_machines_keep_the_vagrant_user() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        topology = inventory.load(REPO / "inventories" / "vagrant.py")
    for host in topology.hosts:
        users = value(sshd(host), "AllowUsers").split()
        assert users[:2] == ["root", "seawall"] and "vagrant" in users, host.name


def test_the_lab_logs_in_as_root_so_root_keeps_key_only_login(lab: inventory.Topology) -> None:
    for host in lab.hosts:
        assert value(sshd(host), "PermitRootLogin") == "prohibit-password"
        assert value(sshd(host), "PasswordAuthentication") == "no"


def test_a_stated_list_is_used_as_is_plus_extras(lab: inventory.Topology) -> None:
    host = lab.host("data-1")
    data = {**host.data, "sshd_allow_users": ["deploy"], "sshd_allow_users_extra": ["ops"]}
    assert common.allowed_users(data, host.groups) == ["deploy", "ops"]


def test_no_forwarding_but_the_tunnels_own_loopback(lab: inventory.Topology) -> None:
    lines = sshd(lab.host("app-1"))
    for keyword in ("AllowAgentForwarding", "X11Forwarding", "AllowStreamLocalForwarding"):
        assert value(lines, keyword) == "no"
    assert value(lines, "PermitTunnel") == "no" and value(lines, "GatewayPorts") == "no"
    # seawall/postgres/tunnel.py forwards -L to 127.0.0.1:<port>: only that stays possible.
    assert value(lines, "AllowTcpForwarding") == "local"
    assert value(lines, "PermitOpen") == "localhost:* 127.0.0.1:* [::1]:*"


def test_forwarding_off_closes_permit_open_too(lab: inventory.Topology) -> None:
    host = lab.host("gw-1")
    context = {**common.template_context(host.data, host.groups), "sshd_allow_tcp_forwarding": "no"}
    lines = common.render(common.SSHD, context).splitlines()
    assert value(lines, "AllowTcpForwarding") == "no" and value(lines, "PermitOpen") == "none"
