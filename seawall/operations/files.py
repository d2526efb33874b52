"""Install root-owned files safely: checked by a validator, or secret."""

import hashlib
import shlex
from collections.abc import Generator
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import OperationError, operation
from pyinfra.api.command import FileUploadCommand
from pyinfra.facts.files import File, Sha1File

Commands = Generator[str | FileUploadCommand, None, None]


def _root_file(
    src: str,
    dest: str,
    mode: int,
    what: str,
    private: bool = False,
    validate: str | None = None,
    check_installed: str | None = None,
) -> Commands:
    """Yield the commands that put ``src`` at ``dest`` as root:root ``mode``, unless it is there.

    The content goes to ``<dest>.seawall-new`` first and is moved into place
    last, so a reader never sees half a file. ``private`` makes ``dest``'s
    directory 0700 root-only and uploads straight into it (never through the
    shared temporary directory). ``what`` names the file in the no-op message.
    """
    remote = host.get_fact(File, path=dest)
    if remote is False:
        raise OperationError(f"{dest} exists and is not a file")
    if (
        remote
        and remote["mode"] == mode
        and (remote["user"], remote["group"]) == ("root", "root")
        and host.get_fact(Sha1File, path=dest) == hashlib.sha1(src.encode()).hexdigest()
    ):
        host.noop(f"{what} {dest} is already installed")
        return

    new, old, final = (shlex.quote(dest + end) for end in (".seawall-new", ".seawall-old", ""))
    if private:
        yield f"install -d -m 700 -o root -g root {shlex.quote(str(Path(dest).parent))}"
        temp = f"{dest}.seawall-new.upload"
    else:
        temp = host.get_temp_filename(dest)
    yield FileUploadCommand(StringIO(src), f"{dest}.seawall-new", remote_temp_filename=temp)
    owned = f"chown root:root {new} && chmod {mode} {new}"
    if validate is None:
        # Nothing to check in between: owner, mode and move are one step.
        yield f"{owned} && mv -f {new} {final}"
        return
    yield owned
    yield f"{validate.format(path=new)} || {{ rm -f {new}; exit 1; }}"
    if check_installed is None:
        yield f"mv -f {new} {final}"
        return
    yield (
        f"if [ -e {final} ]; then cp -p {final} {old}; fi && mv -f {new} {final} && "
        f"if {check_installed}; then rm -f {old}; "
        f"else if [ -e {old} ]; then mv -f {old} {final}; else rm -f {final}; fi; exit 1; fi"
    )


@operation()
def validated_file(
    src: str,
    dest: str,
    validate: str,
    check_installed: str | None = None,
    mode: int = 644,
):
    """
    Install a file owned by root only if a validator accepts it.

    + src: the file's content
    + dest: where it goes; the candidate is uploaded beside it as ``<dest>.seawall-new``
    + validate: shell command that checks the candidate, ``{path}`` standing for its path
    + check_installed: shell command that checks the whole system once the file is in
      place; if it fails the previous file is put back and the operation fails
    + mode: permissions, as octal digits

    The candidate's name has a dot and no ``.conf`` ending, so neither sudo's
    ``includedir`` nor sshd's ``Include *.conf`` ever reads it.

    **Example:**

    .. code:: python

        validated_file(
            name="Grant the admin passwordless sudo",
            src="seawall ALL=(ALL:ALL) NOPASSWD: ALL\\n",
            dest="/etc/sudoers.d/seawall",
            validate="visudo -cf {path}",
            mode=440,
        )
    """
    yield from _root_file(
        src, dest, mode, "file", validate=validate, check_installed=check_installed
    )


@operation()
def secret_file(src: str, dest: str):
    """
    Install a root-only (0600) file whose content is secret; the content is never printed.

    + src: the file's content
    + dest: where it goes; its directory is created 0700 root-only, and the upload
      lands there first, so the content is never readable by anyone else

    **Example:**

    .. code:: python

        secret_file(
            name="Install the execution service's secrets",
            src="SEAWALL_REDIS_PASSWORD=...\\n",
            dest="/etc/seawall/secrets/execution.env",
        )
    """
    yield from _root_file(src, dest, 600, "secret file", private=True)
