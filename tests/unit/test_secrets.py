"""Secrets from the environment or a 0600 file; a missing one is named with where it was sought."""

import os
import stat
from pathlib import Path

import pytest

from seawall import secrets
from seawall.errors import SeawallError


def test_require_takes_the_environment_over_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "secrets"
    path.write_text("alpha=from-file\nbeta=file-beta\n")
    path.chmod(0o600)
    monkeypatch.setenv(secrets.env_name("alpha"), "from-env")
    assert secrets.require(["alpha", "beta"], str(path), "data-1") == {
        "alpha": "from-env",
        "beta": "file-beta",
    }


def test_require_names_owner_secrets_purpose_and_places(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("alpha", "gamma"):
        monkeypatch.delenv(secrets.env_name(name), raising=False)
    path = tmp_path / "secrets"
    path.write_text("beta=present\n")
    path.chmod(0o600)
    with pytest.raises(SeawallError) as raised:
        secrets.require(["alpha", "beta", "gamma"], str(path), "app-1", " (for service risk)")
    assert str(raised.value) == (
        "app-1: secrets alpha, gamma (for service risk) missing "
        "(secrets_file or $SEAWALL_SECRET_ALPHA, $SEAWALL_SECRET_GAMMA)"
    )


def test_require_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text("alpha=x\n")
    path.chmod(0o644)
    with pytest.raises(SeawallError, match="readable by others"):
        secrets.require(["alpha"], str(path), "data-1")


def _secrets_file(tmp_path: Path, text: str = "alpha=x\n", mode: int = 0o600) -> Path:
    path = tmp_path / "secrets"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_symlink_is_refused_even_to_a_good_file(tmp_path: Path) -> None:
    target = _secrets_file(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(SeawallError) as raised:
        secrets.read_file(link)
    assert str(raised.value) == (
        f"secrets file {link} is a symlink: point secrets_file at the file itself"
    )


def test_a_directory_or_fifo_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    for path in (folder, fifo):
        with pytest.raises(SeawallError, match=f"secrets file {path} is not a regular file"):
            secrets.read_file(path)


def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = _secrets_file(tmp_path)
    # Unit tests run as root (bootstrap's controller): give it to nobody.
    os.chown(path, 65534, 65534)
    with pytest.raises(SeawallError, match=f"secrets file {path} belongs to uid 65534"):
        secrets.read_file(path)


def test_group_bits_alone_are_refused(tmp_path: Path) -> None:
    path = _secrets_file(tmp_path, mode=0o640)
    with pytest.raises(SeawallError, match="readable by others: chmod 600 it"):
        secrets.read_file(path)


def test_ensure_file_keeps_values_and_writes_0600_with_no_temporary_left(tmp_path: Path) -> None:
    path = _secrets_file(tmp_path, "alpha=kept\n")
    assert secrets.ensure_file(path, ["alpha", "beta"]) == ["beta"]
    values = secrets.read_file(path)
    assert values["alpha"] == "kept" and len(values["beta"]) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets"]
    assert secrets.ensure_file(path, ["alpha", "beta"]) == []


def test_a_crash_before_the_rename_leaves_the_old_file_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _secrets_file(tmp_path, "alpha=kept\n")
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def crash(*args: object) -> None:
        assert synced, "the data is synced before the rename"
        raise OSError("power lost")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power lost"):
        secrets.ensure_file(path, ["alpha", "beta"])
    assert path.read_text() == "alpha=kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets"]


def test_ensure_file_refuses_a_symlink_rather_than_replace_it(tmp_path: Path) -> None:
    link = tmp_path / "secrets"
    link.symlink_to(tmp_path / "elsewhere")  # dangling: nothing to read, still refused
    with pytest.raises(SeawallError, match="is a symlink"):
        secrets.ensure_file(link, ["alpha"])
    assert link.is_symlink()


BAD_VALUES = [
    ("redis_password", "two words", "a blank, which Redis's and Sentinel's config"),
    ("sentinel_password", 'say"cheese', "a quote or backslash, which Redis's"),
    ("redis_password", "back\\slash", "a quote or backslash"),
    ("postgres_role_execution_password", 'a"b', "a double quote, which PgBouncer's userlist"),
    ("postgres_role_execution_password", "xy zw", "a blank, which a service's systemd Environ"),
    ("postgres_superuser_password", "line\nbreak", "a control character"),
    ("patroni_restapi_password", "bell\x07", "a control character"),
    ("some_future_password", "it's", "a quote or backslash"),
    # pgBackRest trims blanks around a value: the repository's pass would change.
    ("pgbackrest_cipher_pass", "ends-blank ", "a blank"),
]


@pytest.mark.parametrize(("name", "value", "reason"), BAD_VALUES)
def test_a_value_that_breaks_its_format_is_refused_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(secrets.env_name(name), value)
    with pytest.raises(SeawallError) as raised:
        secrets.require([name], None, "data-1")
    message = str(raised.value)
    assert message.startswith(f"secret {name} in ${secrets.env_name(name)}: it holds {reason}")
    assert value not in message


def test_a_value_that_breaks_its_format_is_refused_from_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(secrets.env_name("redis_password"), raising=False)
    for value in ("has space", "nul\x00byte"):
        path = _secrets_file(tmp_path, f"redis_password={value}\n")
        with pytest.raises(SeawallError) as raised:
            secrets.require(["redis_password"], str(path), "data-1")
        assert str(raised.value).startswith(f"secret redis_password in secrets file {path}: ")
        assert value not in str(raised.value)


def test_a_space_is_fine_where_only_yaml_takes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(secrets.env_name("postgres_superuser_password"), "two words 'and' \"q\"")
    assert secrets.require(["postgres_superuser_password"], None, "data-1")


def test_generated_values_fit_every_format(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    secrets.ensure_file(path, ["some_future_password", *(f"s{i}" for i in range(50))])
    for name, value in secrets.read_file(path).items():
        assert secrets.value_problem(name, value) is None


def test_a_value_that_breaks_its_format_stops_the_inventory_check_before_any_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_inventory import problems, write_inventory

    path = write_inventory(tmp_path)
    monkeypatch.setenv(secrets.env_name("redis_password"), "with space")
    found = [p for p in problems(path) if "redis_password" in p]
    assert found and all(
        "secrets_file: secret redis_password in $SEAWALL_SECRET_" in p for p in found
    )
    assert not any("with space" in p for p in problems(path))
