"""Inventory validation: every problem is found before any connection and names host and key."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seawall import defaults, inventory, settings
from seawall.errors import SeawallError

HOSTS = {
    "data-1": "10.9.0.11",
    "data-2": "10.9.0.12",
    "data-3": "10.9.0.13",
    "app-1": "10.9.0.21",
    "gw-1": "10.9.0.31",
    "ops-1": "10.9.0.41",
}
# Every secret any role needs (defaults.SECRETS, plus the service roles' from the catalogue).
SECRETS = sorted(
    {
        name
        for names in settings.setting(defaults.all_defaults(), "required_secrets").values()
        for name in names
    }
)


def write_inventory(
    tmp_path: Path,
    *,
    hosts: dict[str, str] | None = None,
    sentinels: tuple[str, ...] = ("data-1", "data-2", "data-3"),
    host_data: dict[str, dict] | None = None,
    group_data: str = "",
    secrets: list[str] | None = None,
) -> Path:
    """Write an inventory like inventories/lab.py, with its group data and secrets file."""
    hosts = HOSTS if hosts is None else hosts
    secrets = SECRETS if secrets is None else secrets
    folder = tmp_path / "inventories"
    (folder / "group_data").mkdir(parents=True)
    key = tmp_path / "admin.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample admin\n")
    secrets_file = tmp_path / "secrets"
    secrets_file.write_text("".join(f"{name}=value-{name}\n" for name in secrets))
    secrets_file.chmod(0o600)
    extra = host_data or {}
    entries = ",\n".join(
        f"    ({name!r}, {{'ssh_hostname': '127.0.0.1', 'ssh_port': 1, "
        f"'private_address': {address!r}, **{extra.get(name, {})!r}}})"
        for name, address in hosts.items()
    )
    (folder / "site.py").write_text(
        "from seawall.inventory import check_before_connect\n"
        f"all = [\n{entries}\n]\n"
        "redis = ['data-1', 'data-2', 'data-3']\n"
        f"sentinel = {list(sentinels)!r}\n"
        "etcd = ['data-1', 'data-2', 'data-3']\n"
        "postgres = ['data-1', 'data-2']\n"
        "app = ['app-1']\n"
        "gateway = ['gw-1']\n"
        "ops = ['ops-1']\n"
        "check_before_connect(__file__)\n"
    )
    (folder / "group_data" / "all.py").write_text(
        f"admin_ssh_public_key_file = {str(key)!r}\n"
        f"secrets_file = {str(secrets_file)!r}\n" + textwrap.dedent(group_data)
    )
    return folder / "site.py"


def problems(path: Path) -> list[str]:
    """Each problem as `host: key: message` (the file it names is tested on its own)."""
    return [f"{p.host}: {p.key}: {p.message}" for p in inventory.validate(inventory.load(path))]


def test_valid_inventory_has_no_problems(tmp_path: Path) -> None:
    assert problems(write_inventory(tmp_path)) == []


def test_group_data_from_the_inventory_folder_applies(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, group_data="sentinel_quorum = 3\n")
    topology = inventory.load(path)
    assert topology.host("data-1").data["sentinel_quorum"] == 3
    # Defaults fill what the inventory does not say.
    assert topology.host("data-1").data["redis_port"] == 6379


def test_roles_come_from_groups(tmp_path: Path) -> None:
    topology = inventory.load(write_inventory(tmp_path))
    assert topology.host("data-3").roles == ("redis", "sentinel", "etcd")
    assert topology.host("gw-1").roles == ("gateway",)


def test_two_sentinels_are_refused(tmp_path: Path) -> None:
    found = problems(write_inventory(tmp_path, sentinels=("data-1", "data-2")))
    assert found == ["inventory: group sentinel: needs at least 3 hosts, has 2"]


def test_quorum_must_be_a_majority(tmp_path: Path) -> None:
    found = problems(write_inventory(tmp_path, group_data="sentinel_quorum = 1\n"))
    assert any(p.startswith("data-1: sentinel_quorum: 1 with 3 sentinels") for p in found)


def test_duplicate_address_names_both_hosts(tmp_path: Path) -> None:
    hosts = {**HOSTS, "app-1": HOSTS["data-2"]}
    found = problems(write_inventory(tmp_path, hosts=hosts))
    assert found == ["app-1: private_address: 10.9.0.12 is also the address of data-2"]


def test_bad_address_is_named(tmp_path: Path) -> None:
    hosts = {**HOSTS, "gw-1": "10.9.0.300"}
    assert problems(write_inventory(tmp_path, hosts=hosts)) == [
        "gw-1: private_address: '10.9.0.300' is not an IP address"
    ]


def test_port_clash_on_one_host(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, host_data={"data-3": {"haproxy_rw_port": 6379}})
    assert problems(path) == ["data-3: redis_port: port 6379 is also haproxy_rw_port"]


def test_missing_secret_names_host_and_secret(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, secrets=[s for s in SECRETS if s != "sentinel_password"])
    found = problems(path)
    assert len(found) == 1
    assert found[0].startswith("data-1: secret sentinel_password: not in secrets_file ")
    assert "$SEAWALL_SECRET_SENTINEL_PASSWORD" in found[0]


def test_environment_supplies_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_inventory(tmp_path, secrets=[s for s in SECRETS if s != "redis_password"])
    monkeypatch.setenv("SEAWALL_SECRET_REDIS_PASSWORD", "from-env")
    assert problems(path) == []


def test_world_readable_secrets_file_is_refused(tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    (tmp_path / "secrets").chmod(0o644)
    assert any("secrets_file: secrets file" in p and "chmod 600" in p for p in problems(path))


def test_missing_admin_key_is_named(tmp_path: Path) -> None:
    path = write_inventory(tmp_path)
    (tmp_path / "admin.pub").unlink()
    found = problems(path)
    # Set in group data for every host: said once.
    assert len(found) == 1
    assert found[0] == f"data-1: admin_ssh_public_key_file: {tmp_path / 'admin.pub'} does not exist"


def test_check_raises_with_every_problem(tmp_path: Path) -> None:
    hosts = {**HOSTS, "app-1": HOSTS["data-2"]}
    with pytest.raises(SeawallError) as raised:
        inventory.check(write_inventory(tmp_path, hosts=hosts, sentinels=("data-1", "data-2")))
    message = str(raised.value)
    assert "app-1: private_address" in message
    assert "group sentinel" in message


def test_missing_inventory_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SeawallError, match="does not exist"):
        inventory.load(tmp_path / "nope.py")


def test_pyinfra_stops_before_connecting(tmp_path: Path) -> None:
    # Hosts point at a closed loopback port: if validation let pyinfra go on, it
    # would say it is connecting; it must stop with exit 2 first.
    path = write_inventory(tmp_path, sentinels=("data-1", "data-2"))
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    result = subprocess.run(
        [pyinfra, "-y", str(path), "exec", "--", "true"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "group sentinel: needs at least 3 hosts, has 2" in output
    assert "Connecting to hosts" not in output


def test_shipped_inventories_are_structurally_valid() -> None:
    for name in ("lab.py", "production.example.py"):
        topology = inventory.load(Path("inventories") / name)
        found = [
            p
            for p in inventory.validate(topology, check_secrets=False)
            if p.key != "admin_ssh_public_key_file"
        ]
        assert found == [], name
        assert len(topology.hosts) == 7
