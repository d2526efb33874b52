"""secret_file's commands run for real, in a temporary tree, as pyinfra would run them.

Each command goes to ``sh -c`` with its standard input written the way
pyinfra's connectors write it; after every command the tree is searched for the
secret: it may only ever be in a file no one but its owner can read (the staged
file) or in the installed file with the asked owner and mode.
"""

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import StringCommand
from pyinfra.connectors.util import write_stdin
from pyinfra.context import ctx_host

from seawall.facts.files import FileState
from seawall.operations.files import STAGING, secret_file

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-never-printed"


class _Host:
    """Answers File and Sha1File from the real tree (as the facts would)."""

    def __init__(self) -> None:
        self.noop_description: str | None = None

    def get_fact(self, fact: Any, path: str) -> Any:
        # FileState's own command, run here: what a host would answer.
        assert fact is FileState, fact
        done = subprocess.run(
            ["sh", "-c", fact().command(path)], capture_output=True, text=True, check=True
        )
        return fact().process(done.stdout.splitlines())

    def noop(self, description: str) -> None:
        self.noop_description = description


def _run(command: Any) -> int:
    text = command.get_raw_value() if isinstance(command, StringCommand) else command
    process = subprocess.Popen(["sh", "-c", text], stdin=subprocess.PIPE)
    assert process.stdin is not None
    stdin = (
        command.connector_arguments.get("_stdin") if isinstance(command, StringCommand) else None
    )
    if stdin:
        write_stdin(stdin, process.stdin)
    process.stdin.close()
    return process.wait()


def _holders(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and SECRET in p.read_text()]


def deploy(root: Path, **kwargs: Any) -> tuple[list[int], _Host]:
    """Run secret_file's commands one by one, checking where the secret is after each."""
    fake = _Host()
    with ctx_host.use(fake):
        commands = list(secret_file._inner(**kwargs))
    codes = []
    dest = Path(kwargs["dest"])
    for command in commands:
        assert isinstance(command, str | StringCommand), "secrets are never uploaded"
        codes.append(_run(command))
        if isinstance(command, StringCommand) and "_stdin" in command.connector_arguments:
            (staged,) = (dest.parent / STAGING).iterdir()
            assert stat.S_IMODE(staged.stat().st_mode) == 0o600, "created readable by others"
        for path in _holders(root):
            mode = stat.S_IMODE(path.stat().st_mode)
            if path == dest:
                continue
            assert path.parent.name == STAGING, f"{path} holds the secret outside staging"
            folder = path.parent.stat()
            assert (stat.S_IMODE(folder.st_mode), folder.st_uid) == (0o700, 0)
            # Created 0600; once its final owner and mode are set it waits, still
            # behind the root-only directory, for the rename.
            assert mode & 0o007 == 0, f"{path} is {oct(mode)} while staged"
        if codes[-1]:
            break
    return codes, fake


def test_a_new_secret_file_lands_whole_with_its_mode_and_no_staging_left(tmp_path: Path) -> None:
    dest = tmp_path / "secrets" / "execution.env"
    src = f"SEAWALL_REDIS_PASSWORD={SECRET}"  # no final newline: pyinfra adds one to stdin
    codes, _ = deploy(tmp_path, src=src, dest=str(dest))
    assert set(codes) == {0}
    assert dest.read_text() == src
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert stat.S_IMODE(dest.parent.stat().st_mode) == 0o700
    assert not (dest.parent / STAGING).exists()
    # The second run changes nothing.
    again, fake = deploy(tmp_path, src=src, dest=str(dest))
    assert again == [] and fake.noop_description == f"secret file {dest} is already installed"


def test_a_daemons_directory_keeps_its_mode_and_the_file_gets_its_group(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    folder.mkdir(mode=0o755)
    dest = folder / "seawall.conf"
    dest.write_text("requirepass old\n")
    dest.chmod(0o644)
    codes, _ = deploy(
        tmp_path,
        src=f"requirepass {SECRET}\n",
        dest=str(dest),
        group="daemon",
        mode=640,
        private_dir=False,
    )
    assert set(codes) == {0}
    info = dest.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, 1)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert dest.read_text() == f"requirepass {SECRET}\n"


@pytest.mark.parametrize("check_installed", [None, "true"])
def test_a_rejected_file_leaves_the_live_one(tmp_path: Path, check_installed: str | None) -> None:
    dest = tmp_path / "patroni" / "15-main.yml"
    dest.parent.mkdir()
    dest.write_text("live\n")
    dest.chmod(0o600)
    codes, _ = deploy(
        tmp_path,
        src=f"password: {SECRET}\n",
        dest=str(dest),
        private_dir=False,
        validate="grep -q never-valid {path}",
        check_installed=check_installed,
    )
    assert codes[-1] != 0
    assert dest.read_text() == "live\n"
    assert _holders(tmp_path) == []


def test_a_failed_check_in_place_puts_the_previous_file_back(tmp_path: Path) -> None:
    dest = tmp_path / "patroni" / "15-main.yml"
    dest.parent.mkdir()
    dest.write_text("live\n")
    dest.chmod(0o600)
    codes, _ = deploy(
        tmp_path,
        src=f"password: {SECRET}\n",
        dest=str(dest),
        private_dir=False,
        validate="true {path}",
        check_installed="false",
    )
    assert codes[-1] != 0
    assert dest.read_text() == "live\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_the_secret_is_on_no_command_line() -> None:
    fake = _Host()
    with ctx_host.use(fake):
        commands = list(secret_file._inner(src=SECRET, dest="/nonexistent/seawall/x.env"))
    for command in commands:
        shown = command.get_raw_value() if isinstance(command, StringCommand) else command
        assert SECRET not in shown
    assert any(
        isinstance(c, StringCommand) and c.connector_arguments.get("_stdin") == SECRET
        for c in commands
    )


def test_pyinfra_runs_it_for_real_as_another_user_printing_nothing_of_it(
    tmp_path: Path,
) -> None:
    """The whole path through pyinfra's own connector (@local; ssh writes stdin the same
    way), switching user (--su-user takes the branch --sudo takes: an upload would go
    through /tmp; su is util-linux's, Essential), with --diff and -vv: nothing of the
    secret printed, the file whole, and the second run changes nothing."""
    dest = tmp_path / "secrets" / "test.env"
    deploy = tmp_path / "deploy.py"
    deploy.write_text(
        "from seawall.operations.files import secret_file\n\n"
        f"secret_file(name='Install a test secret', src='TOKEN={SECRET}', dest='{dest}')\n"
    )
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYINFRA_PROGRESS": "off", "NO_COLOR": "1"}
    runs = [
        subprocess.run(
            [pyinfra, "-y", "--su-user", "root", "--diff", "-vv", "@local", str(deploy)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert SECRET not in run.stdout + run.stderr
    assert "head -c" in runs[0].stdout + runs[0].stderr  # -vv printed the commands
    assert dest.read_text() == f"TOKEN={SECRET}"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert "already installed" in runs[1].stdout + runs[1].stderr
