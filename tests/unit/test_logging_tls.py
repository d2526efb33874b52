"""The journal CA's operations run for real, with this machine's OpenSSL 3.0 (Debian 12's).

Two "hosts" (ops-1 and app-1) are directories here; their facts are read from
those files with the facts' own commands, and the operations' commands run in
a shell, uploads written where they go. One pass gives both hosts a key of
their own, a certificate from the CA for their name and address, and the CA's
certificate; a second pass changes nothing; a new key is signed again.
"""

import grp
import os
import pwd
import subprocess
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import FactBase, StringCommand
from pyinfra.api.command import FileUploadCommand
from pyinfra.context import ctx_host, ctx_inventory
from pyinfra.facts.files import File, FileContents

from seawall.operations import tls

ADDRESSES = {"ops-1": "10.77.0.41", "app-1": "10.77.0.21"}


def _sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)


class LocalHost:
    """A host whose files live under ``root`` on this machine."""

    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root = name, root
        self.noops: list[str] = []
        self.logs: list[str] = []

    def get_fact(self, fact: type[FactBase[Any]], **kwargs: Any) -> Any:
        if fact is File:
            path = Path(kwargs["path"])
            if not path.exists():
                return None
            if not path.is_file():
                return False
            st = path.stat()
            return {
                "user": pwd.getpwuid(st.st_uid).pw_name,
                "group": grp.getgrgid(st.st_gid).gr_name,
                "mode": int(oct(st.st_mode & 0o777)[2:]),
            }
        if fact is FileContents:
            path = Path(kwargs["path"])
            return path.read_text().splitlines() if path.is_file() else None
        instance = fact()
        output = _sh(str(instance.command(**kwargs))).stdout.splitlines()
        return instance.process(output) if output else instance.default()

    def noop(self, description: str) -> None:
        self.noops.append(description)

    def log(self, message: str, *args: Any, **kwargs: Any) -> None:
        self.logs.append(message)

    def get_temp_filename(self, *args: Any, **kwargs: Any) -> str:
        return str(self.root / "upload.tmp")


class Inventory:
    def __init__(self, hosts: dict[str, LocalHost]) -> None:
        self.hosts = hosts

    def get_host(self, name: str) -> LocalHost:
        return self.hosts[name]


def make_lab(root: Path) -> dict[str, Any]:
    """ops-1 and app-1 as directories under ``root``."""
    hosts = {name: LocalHost(name, root / name) for name in ADDRESSES}
    for one in hosts.values():
        one.root.mkdir()
    return {"hosts": hosts, "inventory": Inventory(hosts), "group": grp.getgrgid(os.getgid())[0]}


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, Any]:
    return make_lab(tmp_path)


def tls_dir(host: LocalHost) -> str:
    return str(host.root / "tls")


def ca_dir(lab: dict[str, Any]) -> str:
    return str(lab["hosts"]["ops-1"].root / "ca")


def run(lab: dict[str, Any], name: str, op: Any, **kwargs: Any) -> list[str]:
    """Run ``op`` on host ``name`` for real; return the commands it ran (uploads as 'upload')."""
    host = lab["hosts"][name]
    ran = []
    with ctx_host.use(host), ctx_inventory.use(lab["inventory"]):
        commands = list(op._inner(**kwargs))
    for command in commands:
        if isinstance(command, FileUploadCommand):
            src = command.src
            assert isinstance(src, StringIO), src
            Path(str(command.dest)).write_text(src.getvalue())
            ran.append(f"upload {command.dest}")
            continue
        text = command.get_raw_value() if isinstance(command, StringCommand) else str(command)
        result = _sh(text)
        assert result.returncode == 0, (text, result.stderr)
        ran.append(text)
    return ran


def deploy(lab: dict[str, Any], addresses: dict[str, str] = ADDRESSES) -> dict[str, list[str]]:
    """One deploy's certificate phase, in the order deploy_logging calls it."""
    hosts = lab["hosts"]
    done: dict[str, list[str]] = {}
    done["ca"] = run(lab, "ops-1", tls.tls_ca, directory=ca_dir(lab), common_name="CA", days=3650)
    for name, host in hosts.items():
        done[f"key {name}"] = run(
            lab, name, tls.tls_key, directory=tls_dir(host), common_name=name, group=lab["group"]
        )
    peers = [(name, f"{tls_dir(host)}/host.csr", addresses[name]) for name, host in hosts.items()]
    done["sign"] = run(
        lab, "ops-1", tls.tls_signed, directory=ca_dir(lab), peers=peers, days=397, renew_days=30
    )
    for name, host in hosts.items():
        done[f"install {name}"] = run(
            lab,
            name,
            tls.tls_certificate,
            directory=tls_dir(host),
            ca_host="ops-1",
            ca_directory=ca_dir(lab),
            renew_days=30,
        )
    return done


def _openssl(command: str) -> str:
    result = _sh(command)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_one_deploy_gives_every_host_a_certificate_for_its_own_key(lab: dict[str, Any]) -> None:
    done = deploy(lab)
    assert all(done.values()), {step: ran for step, ran in done.items() if not ran}
    for name, host in lab["hosts"].items():
        directory = tls_dir(host)
        assert _openssl(f"openssl verify -CAfile {directory}/ca.pem {directory}/host.pem").endswith(
            ": OK\n"
        )
        cert_key = _openssl(f"openssl x509 -in {directory}/host.pem -noout -pubkey")
        own_key = _openssl(f"openssl pkey -in {directory}/host.key -pubout")
        assert cert_key == own_key
        text = _openssl(
            f"openssl x509 -in {directory}/host.pem -noout -subject -ext subjectAltName"
        )
        assert f"CN = {name}" in text and f"DNS:{name}, IP Address:{ADDRESSES[name]}" in text
        purposes = _openssl(f"openssl x509 -in {directory}/host.pem -noout -purpose")
        assert "SSL client : Yes" in purposes and "SSL server : Yes" in purposes
        assert "CA : No" in purposes.replace("SSL server CA : No", "")
        key = Path(directory, "host.key").stat()
        assert oct(key.st_mode & 0o777) == "0o640"
    # The CA's key stays in its 0700 directory; no host's key left its own.
    assert oct(Path(ca_dir(lab)).stat().st_mode & 0o777) == "0o700"
    uploads = [line for ran in done.values() for line in ran if line.startswith("upload")]
    assert not any(line.endswith(".key") for line in uploads), uploads


def test_a_second_deploy_changes_nothing(lab: dict[str, Any]) -> None:
    deploy(lab)
    for host in lab["hosts"].values():
        host.noops.clear()
    again = deploy(lab)
    assert again == {step: [] for step in again}
    assert lab["hosts"]["ops-1"].noops == [
        f"the CA in {ca_dir(lab)} exists",
        "ops-1 has a TLS key and its request",
        "every peer's certificate is signed and current",
        "ops-1 has its current certificate and the CA's",
    ]


def test_a_new_key_is_signed_again_and_installed(lab: dict[str, Any]) -> None:
    deploy(lab)
    app = lab["hosts"]["app-1"]
    old = Path(tls_dir(app), "host.pem").read_text()
    for name in ("host.key", "host.csr"):
        Path(tls_dir(app), name).unlink()
    again = deploy(lab)
    assert again["key app-1"] and again["install app-1"]
    # Only app-1's certificate is signed again.
    signed = [line for line in again["sign"] if line.startswith("openssl x509")]
    assert len(signed) == 1 and "-subj /CN=app-1" in signed[0]
    assert not again["key ops-1"] and not again["install ops-1"]
    new = Path(tls_dir(app), "host.pem").read_text()
    assert new != old
    assert deploy(lab) == {step: [] for step in again}


def test_a_request_cannot_choose_its_name(lab: dict[str, Any]) -> None:
    deploy(lab)
    app = lab["hosts"]["app-1"]
    directory = tls_dir(app)
    # A request asking to be ops-1 (and a CA): it is still signed as app-1, a leaf.
    for name in ("host.key", "host.csr"):
        Path(directory, name).unlink()
    _openssl(
        f"openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {directory}/host.key"
    )
    _openssl(
        f"openssl req -new -key {directory}/host.key -subj /CN=ops-1 "
        f"-addext basicConstraints=critical,CA:TRUE -out {directory}/host.csr"
    )
    deploy(lab)
    text = _openssl(f"openssl x509 -in {directory}/host.pem -noout -subject -ext basicConstraints")
    assert "CN = app-1" in text and "CA:FALSE" in text
