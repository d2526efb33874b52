"""CLI exit codes and error output (no lab needed)."""

from pathlib import Path

from typer.testing import CliRunner

from seawall.cli import app
from tests.unit.test_inventory import HOSTS, write_inventory

runner = CliRunner()


def test_help_documents_exit_codes() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "0 ok, 1 finding" in result.output


def test_check_valid_inventory_exits_0(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(write_inventory(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "data-1" in result.stdout
    assert "redis,sentinel,etcd,postgres" in result.stdout


def test_check_invalid_inventory_exits_2_naming_host_and_key(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, hosts={**HOSTS, "ops-1": HOSTS["app-1"]})
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    assert "ops-1: private_address: 10.9.0.21 is also the address of app-1" in result.stderr


def test_missing_inventory_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["lab", "status", "-i", str(tmp_path / "none.py")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_lab_commands_refuse_a_non_lab_inventory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["lab", "status", "-i", str(write_inventory(tmp_path))])
    assert result.exit_code == 2
    assert "lab_bridge is missing: not a lab inventory" in result.stderr


def test_destructive_lab_command_asks_first(tmp_path: Path) -> None:
    result = runner.invoke(app, ["lab", "down", "-i", str(write_inventory(tmp_path))], input="n\n")
    assert result.exit_code == 1
    assert "Destroy every lab host?" in result.output
