"""Install files deciding from one fact: plain (``put``), checked by a validator, or secret.

pyinfra's other file operations are re-exported, so a component imports one ``files``.
"""

import hashlib
import os
import posixpath
import shlex
from collections.abc import Generator
from io import StringIO
from pathlib import Path, PurePosixPath
from typing import IO, Any

from pyinfra import host, state
from pyinfra.api import OperationError, QuoteString, StringCommand, operation
from pyinfra.api.command import FileUploadCommand
from pyinfra.api.util import get_file_sha1
from pyinfra.operations.files import directory as directory
from pyinfra.operations.files import file as file
from pyinfra.operations.files import line as line
from pyinfra.operations.files import link as link
from pyinfra.operations.files import sync as sync
from pyinfra.operations.files import template as template
from pyinfra.operations.util import files as file_utils
from pyinfra.operations.util.files import ensure_mode_int

from seawall.facts.files import FileState

Commands = Generator[str | StringCommand | FileUploadCommand, None, None]

# Beside the secret's directory (so the final move is a rename on one file
# system), root-only: the content is never readable by anyone else on its way.
STAGING = ".seawall-staging"


def _installed(src: str, dest: str, user: str, group: str, mode: int, what: str) -> bool:
    """Return whether ``dest`` already has ``src`` as content, owner and mode (a no-op then).

    Compared by hash: the content itself is never read back, so never printed.
    """
    remote = host.get_fact(FileState, path=dest) or {"type": "absent"}
    if remote["type"] not in ("file", "absent"):
        raise OperationError(f"{dest} exists and is not a file")
    if (
        remote["type"] == "file"
        and remote.get("mode") == mode
        and (remote.get("user"), remote.get("group")) == (user, group)
        and remote.get("sha1") == hashlib.sha1(src.encode()).hexdigest()
    ):
        host.noop(f"{what} {dest} is already installed")
        return True
    return False


def _checked_move(new: str, final: str, old: str, validate: str, check: str | None) -> Commands:
    """Yield the commands that check ``new``, then move it to ``final`` (``old`` keeps the
    previous file while ``check`` runs); a rejected file never replaces the live one."""
    yield f"{validate.format(path=new)} || {{ rm -f {new}; exit 1; }}"
    if check is None:
        yield f"mv -f {new} {final}"
        return
    yield (
        f"if [ -e {final} ]; then cp -p {final} {old}; fi && mv -f {new} {final} && "
        f"if {check}; then rm -f {old}; "
        f"else if [ -e {old} ]; then mv -f {old} {final}; else rm -f {final}; fi; exit 1; fi"
    )


def _root_file(
    src: str,
    dest: str,
    mode: int,
    validate: str | None = None,
    check_installed: str | None = None,
) -> Commands:
    """Yield the commands that put ``src`` at ``dest`` as root:root ``mode``, unless it is there.

    The content goes to ``<dest>.seawall-new`` first and is moved into place
    last, so a reader never sees half a file.
    """
    if _installed(src, dest, "root", "root", mode, "file"):
        return
    new, old, final = (shlex.quote(dest + end) for end in (".seawall-new", ".seawall-old", ""))
    temp = host.get_temp_filename(dest)
    yield FileUploadCommand(StringIO(src), f"{dest}.seawall-new", remote_temp_filename=temp)
    owned = f"chown root:root {new} && chmod {mode} {new}"
    if validate is None:
        # Nothing to check in between: owner, mode and move are one step.
        yield f"{owned} && mv -f {new} {final}"
        return
    yield owned
    yield from _checked_move(new, final, old, validate, check_installed)


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
    yield from _root_file(src, dest, mode, validate=validate, check_installed=check_installed)


@operation()
def secret_file(
    src: str,
    dest: str,
    user: str = "root",
    group: str = "root",
    mode: int = 600,
    private_dir: bool = True,
    validate: str | None = None,
    check_installed: str | None = None,
):
    """
    Install a file whose content is secret; the content is never printed nor on a command line.

    + src: the file's content
    + dest: where it goes
    + user, group: its owner
    + mode: its permissions, as octal digits (0600 unless a daemon's group must read it)
    + private_dir: make ``dest``'s directory 0700 root-only too (a directory of
      secrets only); else it is left as it is (``/etc/redis``, which Redis reads)
    + validate: shell command that checks the staged file, ``{path}`` standing for its
      path; a rejected file is deleted and the live one stays
    + check_installed: shell command that checks the whole system once the file is in
      place; if it fails the previous file is put back and the operation fails

    The content travels on the standard input of one command that writes it,
    umask 077, into ``<dest's directory>/.seawall-staging/`` (0700, root): no
    upload through a shared temporary directory (which ``--sudo`` would use),
    no file that is ever readable by others, even for a moment. Owner and mode
    are set there; the file is then renamed into place (one file system), so a
    reader sees the old file or the new one, whole. It is compared by hash, and
    never diffed: ``pyinfra --diff`` shows nothing of it. Call it with ``name=``
    always: pyinfra prints an unnamed operation's arguments.

    **Example:**

    .. code:: python

        secret_file(
            name="Install the execution service's secrets",
            src="SEAWALL_REDIS_PASSWORD=...\\n",
            dest="/etc/seawall/secrets/execution.env",
        )
    """
    if _installed(src, dest, user, group, mode, "secret file"):
        return
    parent = PurePosixPath(dest).parent
    staging = parent / STAGING
    name = PurePosixPath(dest).name
    new, old = shlex.quote(str(staging / name)), shlex.quote(str(staging / f"{name}.old"))
    final = shlex.quote(dest)
    if private_dir:
        yield f"install -d -m 700 -o root -g root {shlex.quote(str(parent))}"
    yield f"install -d -m 700 -o root -g root {shlex.quote(str(staging))}"
    content = src.encode()
    # head -c: exactly the content, without the newline pyinfra adds to stdin's last line.
    yield StringCommand(f"umask 077 && head -c {len(content)} > {new}", _stdin=src)
    yield f"chown {shlex.quote(user)}:{shlex.quote(group)} {new} && chmod {mode} {new}"
    # The staging directory is seawall's own: what an interrupted run left there goes too.
    cleanup = f"rm -rf {shlex.quote(str(staging))}"
    if validate is None:
        yield f"mv -f {new} {final} && {cleanup}"
        return
    yield from _checked_move(new, final, old, validate, check_installed)
    yield cleanup


@operation()
def put(
    src: str | IO[Any],
    dest: str,
    user: str | None = None,
    group: str | None = None,
    mode: int | str | None = None,
    add_deploy_dir: bool = True,
    create_remote_dir: bool = True,
) -> Commands:
    """
    Upload a file unless ``dest`` already has its content, owner and mode.

    + src: the content (an IO object such as ``StringIO``) or a local file's path
    + dest: the remote file's full path (a directory is refused)
    + user, group: its owner
    + mode: its permissions, as octal digits
    + add_deploy_dir: ``src`` is relative to the deploy directory
    + create_remote_dir: create ``dest``'s directory (``mkdir -p``, owned by ``user`` and
      ``group``) when it is missing

    pyinfra's ``files.put`` for these arguments, same commands and no-op
    message, deciding from one ``FileState`` fact where pyinfra gathers
    ``File``, ``Sha1File`` and ``Directory`` of the parent. The content is
    compared by hash and never read back, so ``--diff`` shows none of it.

    **Example:**

    .. code:: python

        put(
            name="Install the NGINX journal limits",
            src=StringIO("[Journal]\\n"),
            dest="/etc/systemd/journald.conf.d/nginx.conf",
            user="root",
            group="root",
            mode="644",
        )
    """
    local: str | IO[Any]
    if hasattr(src, "read"):
        local = src
    else:
        local = os.path.join(state.cwd, src) if add_deploy_dir and state.cwd else str(src)
        if not Path(local).is_file():
            raise OSError(f"No such file: {local}")
    wanted_mode = ensure_mode_int(mode)
    remote = host.get_fact(FileState, path=dest) or {"type": "absent", "parent": "absent"}
    if remote["type"] == "directory":
        raise OperationError(f"{dest} is a directory: give the file's full path")
    parent = posixpath.dirname(dest)
    if create_remote_dir and parent:
        # As pyinfra's files.directory for put: a missing directory is made, an
        # existing one (or a link) is left as it is, anything else is an error.
        if remote["parent"] == "other":
            raise OperationError(f"{parent} exists and is not a directory")
        if remote["parent"] == "absent":
            yield StringCommand("mkdir", "-p", QuoteString(parent))
            if user or group:
                yield file_utils.chown(parent, user, group)
        elif remote["parent"] == "link":
            host.noop(f"directory {parent} already exists (as a link)")
    # A hash the host could not give (unreadable file) is a difference: upload.
    if remote["type"] != "file" or remote.get("sha1") != get_file_sha1(local):
        temp_dir = (getattr(host, "current_op_global_arguments", None) or {}).get("_temp_dir")
        yield FileUploadCommand(
            local, dest, remote_temp_filename=host.get_temp_filename(dest, temp_directory=temp_dir)
        )
        if user or group:
            yield file_utils.chown(dest, user, group)
        if wanted_mode:
            yield file_utils.chmod(dest, wanted_mode)
        return
    changed = False
    if wanted_mode and remote.get("mode") != wanted_mode:
        yield file_utils.chmod(dest, wanted_mode)
        changed = True
    if (user and remote.get("user") != user) or (group and remote.get("group") != group):
        yield file_utils.chown(dest, user, group)
        changed = True
    if not changed:
        host.noop(f"file {dest} is already uploaded")
