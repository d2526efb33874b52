"""The lab's SSH key and the admin's public key file beside it (real ssh-keygen, in tmp)."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from seawall.lab import hosts


def _config(tmp_path: Path) -> Any:
    values = {"admin_ssh_public_key_file": str(tmp_path / "state" / "admin_ed25519.pub")}
    return SimpleNamespace(
        ssh_key=tmp_path / "state" / "id_ed25519",
        topology=SimpleNamespace(value=values.__getitem__),
    )


def test_lab_up_makes_the_key_once_and_keeps_the_admin_copy_equal(tmp_path: Path) -> None:
    config = _config(tmp_path)
    hosts.ensure_lab_key(config)
    public = (tmp_path / "state" / "id_ed25519.pub").read_text()
    admin = tmp_path / "state" / "admin_ed25519.pub"
    assert public.startswith("ssh-ed25519 ") and admin.read_text() == public
    assert admin.stat().st_mode & 0o777 == 0o644
    # A lab made before the admin copy existed, or with a stale copy, gets it again;
    # the key itself is never remade.
    admin.write_text("stale\n")
    hosts.ensure_lab_key(config)
    assert admin.read_text() == public
    assert (tmp_path / "state" / "id_ed25519.pub").read_text() == public
