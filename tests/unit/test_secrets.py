"""Secrets from the environment or a 0600 file; a missing one is named with where it was sought."""

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
