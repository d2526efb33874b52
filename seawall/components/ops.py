"""The ops host as controller: ``deploy_ops()``, its drift cron and its 04:00 restart timer.

What it guarantees on the first ``ops`` host:

- Debian's ``python3-venv`` and ``cron``; a venv (``ops_venv_dir``) holding
  seawall and pyinfra, installed ``--no-index`` from a wheelhouse the
  controller built (``ops_wheelhouse_dir``): lab hosts reach no package index,
  and pyinfra is not in Debian 12. It is reinstalled only when the wheelhouse's
  hash differs from the one recorded in the venv;
- copies of ``deploys/``, ``config.py``, the inventory in use and its
  ``group_data/`` under ``ops_site_dir``; the secrets the inventory needs at
  the path its ``secrets_file`` names (root 0600, never printed), and the
  admin's public key where ``admin_ssh_public_key_file`` names it, so the
  copied inventory reads on this host exactly as on the controller;
- root's own SSH key, made here (it never leaves the host), found where the
  inventory's ``ssh_key`` names it, and root's known_hosts (at
  ``ssh_known_hosts_file`` if set) holding every inventory host's host keys;
- a ``seawall-drift`` crontab line (``drift_cron``) running ``seawall drift``
  with its textfile metrics and the last JSON report in ``ops_state_dir``;
- ``seawall-restart.timer`` (``restart_calendar``, ``Persistent=false``,
  ``AccuracySec=1s``) and its oneshot service running ``seawall restart
  --rolling --yes --json``, bounded by ``restart_timeout_sec``, with
  ``OnFailure=`` the failure hook and textfile metrics of every run's end;
  ``restart_enabled`` False stops and disables the timer.

On every host: the deploy user (``ssh_user``) accepts the ops host's key,
besides whatever keys it had (one line, replaced if the ops host's key changes).

What it never does:

- copy a private key anywhere, or put a secret on a command line;
- run a restart or a drift check by itself (the timer and the cron do);
- rebuild the wheelhouse when the source has not changed.
"""

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from fnmatch import fnmatch
from io import StringIO
from pathlib import Path
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import FileContents
from pyinfra.operations import crontab, server
from pyinfra.operations.util import any_changed

import seawall
from seawall import secrets
from seawall.components.common import install_packages
from seawall.components.services import failure_hook
from seawall.components.templates import render
from seawall.defaults import OPS
from seawall.errors import SeawallError
from seawall.facts import memo
from seawall.facts.files import TREE_SKIP, FileState, TreeState
from seawall.inventory import checked_inventory
from seawall.operations import files, systemd
from seawall.operations.files import secret_file
from seawall.operations.ssh import HOST_KEY_TYPES, key_trusted, ssh_keypair, unreachable
from seawall.settings import setting

CONCERN = "ops"
TIMER = "/etc/systemd/system/seawall-restart.timer"
SERVICE = "/etc/systemd/system/seawall-restart.service"
RECORD = "/usr/local/libexec/seawall-restart-record"
DRIFT_RUN = "/usr/local/libexec/seawall-drift-run"
TEMPLATES: tuple[str, ...] = (TIMER, SERVICE, RECORD, DRIFT_RUN)
PACKAGES = ["python3-venv", "cron"]
CRON_NAME = "seawall-drift"
# The account that runs the cron, the timer and the deploys from the ops host.
OPS_USER, OPS_HOME = "root", "/root"
OPS_KEY = f"{OPS_HOME}/.ssh/id_ed25519"
# Written into the wheelhouse beside the wheels: its hash names the content.
MANIFEST = "SHA256SUMS"
# Recorded in the venv once pip installed a wheelhouse: the hash it installed.
INSTALLED = "seawall-wheelhouse.sha256"
DRIFT_REPORT = "drift-last.json"
# What of a checkout the wheel is built from (its hash decides a rebuild).
_SOURCE = ("pyproject.toml", "seawall")
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache"}


# --- the wheelhouse, on the controller --------------------------------------------


def source_root() -> Path | None:
    """Return the checkout seawall runs from, or None when it runs installed (the ops host)."""
    root = Path(seawall.__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


# Requirements whose markers hold on the hosts' python3 (Debian 12: 3.11.2) but
# may not on the controller's: redis needs async-timeout below Python 3.11.3,
# and pip resolves markers for the Python it runs on.
HOST_EXTRAS = ("async-timeout>=4.0.3",)


def source_hash(root: Path) -> str:
    """Return the sha256 of what the wheel is built from: pyproject.toml and the package."""
    digest = hashlib.sha256()
    for top in _SOURCE:
        base = root / top
        paths = [base] if base.is_file() else sorted(base.rglob("*"))
        for path in paths:
            rel = path.relative_to(root)
            if not path.is_file() or _SKIP_DIRS & set(rel.parts) or path.suffix == ".pyc":
                continue
            digest.update(f"{rel.as_posix()}\0{path.stat().st_size}\0".encode())
            digest.update(path.read_bytes())
    digest.update("\0".join(HOST_EXTRAS).encode())
    return digest.hexdigest()


def manifest(wheelhouse: Path) -> str:
    """Return the SHA256SUMS text of the wheels in ``wheelhouse`` (sorted by name)."""
    return "".join(
        f"{hashlib.sha256(wheel.read_bytes()).hexdigest()}  {wheel.name}\n"
        for wheel in sorted(wheelhouse.glob("*.whl"))
    )


def copy_source(root: Path, dest: Path) -> Path:
    """Copy what the wheel is built from (``_SOURCE``, no caches) into ``dest``; return it."""
    for top in _SOURCE:
        if (root / top).is_dir():
            ignore = shutil.ignore_patterns(*_SKIP_DIRS, "*.pyc")
            shutil.copytree(root / top, dest / top, ignore=ignore)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / top, dest / top)
    return dest


def pip_wheel(root: Path, target: Path) -> None:
    """Build seawall and every dependency as wheels into ``target`` with this venv's pip.

    Raises:
        SeawallError: pip failed (its last lines are in the message).
    """
    pip = Path(sys.executable).with_name("pip")
    with tempfile.TemporaryDirectory(prefix="seawall-wheel-") as copy:
        # setuptools writes build/ and egg-info into the tree it builds: build a
        # copy, so the checkout (and a test run reading it) never changes.
        source = copy_source(root, Path(copy))
        # No build isolation: the venv's setuptools builds seawall itself, no index
        # needed for it; the dependencies come from pip's cache or the controller's index.
        command = [str(pip), "wheel", "--no-build-isolation", "--wheel-dir", str(target)]
        command += [str(source), *HOST_EXTRAS]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise SeawallError(f"pip wheel of {root} failed:\n{tail}")


def wheelhouse(
    root: Path, cache_dir: Path, build: Callable[[Path, Path], None] = pip_wheel
) -> Path:
    """Return the wheelhouse of ``root``'s current source, building it only if the cache lacks it.

    The cache holds one folder per source hash; a folder is complete once its
    manifest exists (it is built beside and renamed into place), so an
    interrupted build is never reused. Older folders are removed.

    Raises:
        SeawallError: the build failed.
    """
    digest = source_hash(root)
    target = cache_dir / digest
    if (target / MANIFEST).is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{digest}."))
    try:
        build(root, building)
        if not any(building.glob("*.whl")):
            raise SeawallError(f"building the wheelhouse of {root} made no wheel")
        (building / MANIFEST).write_text(manifest(building))
        building.rename(target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    for old in cache_dir.iterdir():
        if old != target and old.is_dir() and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    return target


def local_wheelhouse(data: Any) -> Path | None:
    """Return the wheelhouse this machine deploys: built from the checkout, or the installed one.

    On the ops host itself (seawall installed from the wheelhouse, no checkout:
    ``seawall drift``'s dry run) it is the wheelhouse it was installed from, so
    the dry run compares the ops host with itself and finds no drift. None on a
    controller running seawall from a wheel of its own: nothing to build from.

    Raises:
        DeployError: the build failed.
    """
    root = source_root()
    try:
        if root is not None:
            return wheelhouse(root, Path(str(setting(data, "ops_wheelhouse_cache_dir"))))
    except SeawallError as error:
        raise DeployError(f"{host.name}: {error}") from None
    installed = Path(str(setting(data, "ops_wheelhouse_dir")))
    return installed if (installed / MANIFEST).is_file() else None


# --- what the units, cron and copies see -----------------------------------------


def ops_context(data: Mapping[str, Any] | Any, inventory_file: str) -> dict[str, Any]:
    """Return what the ops templates see; ``inventory_file`` is relative to the site copy."""
    context = {key: setting(data, key) for key in OPS}
    context.update(
        inventory=inventory_file,
        textfile_dir=setting(data, "services_textfile_dir"),
        # The restart unit may write there (its operations lock), and nowhere else but metrics.
        lock_dir=str(Path(str(setting(data, "restart_lock_file"))).parent),
        record_script=RECORD,
        report=f"{context['ops_state_dir']}/{DRIFT_REPORT}",
    )
    return context


def cron_fields(schedule: str) -> dict[str, str]:
    """Return pyinfra crontab's keyword arguments for a five-field ``drift_cron``."""
    minute, hour, day_of_month, month, day_of_week = schedule.split()
    return {
        "minute": minute,
        "hour": hour,
        "day_of_month": day_of_month,
        "month": month,
        "day_of_week": day_of_week,
    }


def inventory_in_use() -> Path:
    """Return the inventory file of this pyinfra run, relative to where it runs.

    Raises:
        DeployError: the inventory never called check_before_connect (every
            seawall inventory does), or it is not under the working directory.
    """
    given = checked_inventory()
    if given is None:
        raise DeployError(
            "the ops deploy copies the inventory file: run pyinfra with an inventory "
            "that calls seawall.inventory.check_before_connect(__file__)"
        )
    try:
        return given.relative_to(Path.cwd().resolve())
    except ValueError:
        message = f"{given} is not under {Path.cwd()}: run pyinfra from its checkout"
        raise DeployError(message) from None


def wanted_tree(root: Path, file_mode: int = 644, dir_mode: int = 755) -> dict[str, dict[str, Any]]:
    """Return what ``TreeState`` reads of ``root`` once ``files.sync`` copied it with
    these modes: its folders and files (by hash), Python's caches (``TREE_SKIP``) left out."""
    tree: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(fnmatch(part, pattern) for part in relative.parts for pattern in TREE_SKIP):
            continue
        if path.is_dir():
            tree[relative.as_posix()] = {"type": "directory", "mode": dir_mode}
        elif path.is_file():
            sha1 = hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest()
            tree[relative.as_posix()] = {"type": "file", "mode": file_mode, "sha1": sha1}
    return tree


def site_files(cwd: Path, inventory_file: Path) -> list[tuple[Path, str]]:
    """Return (local file, path in the site copy) of config.py, the inventory, its group data."""
    found = [(cwd / "config.py", "config.py")] if (cwd / "config.py").is_file() else []
    found.append((cwd / inventory_file, inventory_file.as_posix()))
    group_data = inventory_file.parent / "group_data"
    for path in sorted((cwd / group_data).glob("*.py")):
        found.append((path, (group_data / path.name).as_posix()))
    return found


def secrets_text(data: Any) -> str:
    """Return the secrets file the ops host gets: every secret of every inventory host.

    Raises:
        DeployError: one is missing on the controller.
    """
    names: set[str] = set()
    for member in inventory:
        wanted = setting(member.data, "required_secrets")
        names |= {name for group in member.groups for name in wanted.get(group, [])}
    try:
        values = secrets.require(
            sorted(names), setting(data, "secrets_file"), host.name, " (for the ops host)"
        )
    except SeawallError as error:
        raise DeployError(str(error)) from None
    lines = "".join(f"{name}={values[name]}\n" for name in sorted(values))
    return "# seawall secrets, copied by the ops deploy: never commit\n" + lines


def known_hosts_text() -> str:
    """Return a known_hosts naming every inventory host by the address pyinfra connects to."""
    lines = []
    for member in inventory:
        address = str(member.data.get("ssh_hostname") or member.name)
        port = member.data.get("ssh_port")
        name = f"[{address}]:{port}" if port and int(port) != 22 else address
        for kind in HOST_KEY_TYPES:
            for key in (
                memo.get_fact(member, FileContents, path=f"/etc/ssh/ssh_host_{kind}_key.pub") or []
            ):
                lines.append(f"{name} {' '.join(key.split()[:2])}\n")
    return "".join(lines)


# --- the deploy ---------------------------------------------------------------------


def _controller() -> Any:
    ops = inventory.get_group("ops", default=[])
    return ops[0] if ops else None


@deploy("The ops host as controller", data_defaults=OPS)
def deploy_ops() -> None:
    """
    Make the first ``ops`` host run seawall (drift cron, restart timer); every host trusts it.

    Hosts outside the inventory's ``ops`` group only trust its key.

    **Example:**

    .. code:: python

        from seawall.components.ops import deploy_ops

        deploy_ops()
    """
    controller = _controller()
    if controller is None:
        return
    is_ops = host.name == controller.name
    # Phases in the same order on every host (pyinfra orders operations by where
    # they are called): the key exists before any host reads it.
    if is_ops:
        _install(host.data)
        _configure(host.data)
    user = str(host.data.get("ssh_user") or "root")
    key_trusted(
        name="Let the ops host's key in as the deploy user",
        user=user,
        home="/root" if user == "root" else f"/home/{user}",
        peer=controller.name,
        peer_key=f"{OPS_KEY}.pub",
    )
    if is_ops:
        _activate(host.data)


def _install(data: Any) -> None:
    """Install python3-venv and cron, then seawall and pyinfra from the controller's wheels."""
    install_packages("Install python3-venv and cron", PACKAGES)
    local = local_wheelhouse(data)
    if local is None:
        # Said, not failed: the rest of the ops host is still deployed and checked.
        host.noop("seawall runs from an installed wheel here: the ops host's venv is left as it is")
        return
    venv, remote = str(setting(data, "ops_venv_dir")), str(setting(data, "ops_wheelhouse_dir"))
    files.directory(name="Create the wheelhouse folder", path=remote, mode="755", present=True)
    local_manifest = (local / MANIFEST).read_text()
    digest = hashlib.sha256(local_manifest.encode()).hexdigest()
    remote_manifest = host.get_fact(FileContents, path=f"{remote}/{MANIFEST}") or []
    if "".join(f"{line}\n" for line in remote_manifest) == local_manifest:
        # The manifest names every wheel by its hash and is copied with them: one
        # read instead of a checksum per wheel (files.sync's ~5 s on a no-op run).
        host.noop(f"the ops host holds wheelhouse {digest[:12]}")
    else:
        files.sync(
            name="Copy the controller's wheelhouse",
            src=str(local),
            dest=remote,
            mode="644",
            dir_mode="755",
            delete=True,
            add_deploy_dir=False,
        )
    marker = f"{venv}/{INSTALLED}"
    installed = host.get_fact(FileContents, path=marker) or []
    if installed and installed[0].strip() == digest:
        host.noop(f"the venv holds wheelhouse {digest[:12]}")
        return
    # The hash is recorded only once pip succeeded: a failed install is retried.
    server.shell(
        name="Install seawall and pyinfra into the venv from the wheelhouse",
        commands=[
            f"test -x {venv}/bin/python || python3 -m venv {venv}",
            f"{venv}/bin/pip install --quiet --no-index --find-links {remote} "
            f"--force-reinstall seawall pyinfra",
            f"echo {digest} > {marker}",
        ],
    )


def _ops_key_at(key: str) -> None:
    """Make the inventory's ``ssh_key`` path (the controller's key) this host's own key."""
    files.directory(
        name="Create the folder of the inventory's ssh_key",
        path=str(Path(key).parent),
        mode="700",
        present=True,
    )
    files.link(name="Point the inventory's ssh_key at the ops key", path=key, target=OPS_KEY)
    # OpenSSH offers the public key beside an identity file (`<key>.pub`) and
    # then fails when the private key does not match it: that file must be the
    # ops key's own. A regular file there is an admin key an earlier deploy
    # copied (the lab's admin key once lived at `<ssh_key>.pub`).
    public = f"{key}.pub"
    if (host.get_fact(FileState, path=public) or {}).get("type") == "file":
        server.shell(
            name="Point the ssh_key's public half at the ops key's (was a copied file)",
            commands=[f"ln -sfn {OPS_KEY}.pub {public}"],
        )
    else:
        files.link(
            name="Point the ssh_key's public half at the ops key's",
            path=public,
            target=f"{OPS_KEY}.pub",
        )


def admin_key_apart(data: Any) -> None:
    """Refuse an admin key at ``<ssh_key>.pub``.

    Raises:
        DeployError: here ssh_key is the ops host's own key, and its ``.pub`` must be
            that key's public half (OpenSSH offers it), so the admin's key cannot live there.
    """
    admin_key, key = setting(data, "admin_ssh_public_key_file"), data.get("ssh_key")
    if admin_key and key and str(admin_key) == f"{key}.pub":
        raise DeployError(
            f"{host.name}: admin_ssh_public_key_file: {admin_key} is ssh_key's public half; "
            "on the ops host ssh_key is the host's own key, so keep the admin's key apart "
            "(e.g. /etc/seawall/admin_ed25519.pub)"
        )


def _configure(data: Any) -> None:
    """Copy the deploys, inventory, secrets and admin key; make the key; write known_hosts."""
    admin_key_apart(data)
    cwd = Path.cwd()
    relative = inventory_in_use()
    site = str(setting(data, "ops_site_dir"))
    files.directory(name="Create the site copy's folder", path=site, mode="755", present=True)
    deploys = f"{site}/deploys"
    if host.get_fact(TreeState, path=deploys) == wanted_tree(cwd / "deploys"):
        # One listing with hashes instead of files.sync's two facts per file.
        host.noop(f"{deploys} is the controller's deploys/")
    else:
        files.sync(
            name="Copy deploys/",
            src=str(cwd / "deploys"),
            dest=deploys,
            mode="644",
            dir_mode="755",
            delete=True,
            exclude=["*.pyc"],
            exclude_dir=["__pycache__"],
            add_deploy_dir=False,
        )
    for local, target in site_files(cwd, relative):
        files.put(
            name=f"Copy {target}",
            src=str(local),
            dest=f"{site}/{target}",
            mode="644",
            create_remote_dir=True,
            add_deploy_dir=False,
        )
    secret_file(
        name="Install the inventory's secrets (0600, root only)",
        src=secrets_text(data),
        dest=str(setting(data, "secrets_file") or "/etc/seawall/secrets"),
        # The file alone is private: its directory may hold what daemons read.
        private_dir=False,
    )
    admin_key = setting(data, "admin_ssh_public_key_file")
    if admin_key:
        files.put(
            name="Copy the admin's public key where the inventory names it",
            src=str(admin_key),
            dest=str(admin_key),
            mode="644",
            create_remote_dir=True,
            add_deploy_dir=False,
        )
    ssh_keypair(name="Give the ops host's root an SSH key of its own", user=OPS_USER, home=OPS_HOME)
    key = data.get("ssh_key")
    if key and str(key) != OPS_KEY:
        _ops_key_at(str(key))
    known = str(data.get("ssh_known_hosts_file") or f"{OPS_HOME}/.ssh/known_hosts")
    down = unreachable(sorted(member.name for member in inventory))
    if down:
        # A redeploy while a host is down is normal: its keys cannot be read, and
        # a file without them would lock the ops host out once it is back.
        host.noop(f"{', '.join(down)} unreachable: known_hosts left as it is")
    else:
        files.put(
            name="Know every inventory host's host keys",
            src=StringIO(known_hosts_text()),
            dest=known,
            mode="600",
            create_remote_dir=True,
        )


def _activate(data: Any) -> None:
    """Install the drift cron, the restart units and their failure hook; set the timer."""
    context = ops_context(data, inventory_in_use().as_posix())
    files.directory(
        name="Create the ops state folder", path=context["ops_state_dir"], mode="700", present=True
    )
    _put("Install the drift cron's runner", DRIFT_RUN, context, "755")
    fields = cron_fields(str(context["drift_cron"]))
    crontab.crontab(
        name="Check for drift from cron",
        command=DRIFT_RUN,
        user=OPS_USER,
        cron_name=CRON_NAME,
        minute=fields["minute"],
        hour=fields["hour"],
        day_of_month=fields["day_of_month"],
        month=fields["month"],
        day_of_week=fields["day_of_week"],
    )
    # Debian starts cron on install, unless an image's policy-rc.d kept it down.
    systemd.service(
        name="Run cron now and at boot", service="cron.service", running=True, enabled=True
    )
    hook = failure_hook(data)
    _put("Install the restart's metrics recorder", RECORD, context, "755")
    service = _put("Install the rolling restart service", SERVICE, context)
    timer = _put("Install the nightly rolling restart timer", TIMER, context)
    systemd.daemon_reload(
        name="Reload systemd (the restart units changed)",
        _if=any_changed(service, timer, *hook),
    )
    enabled = bool(context["restart_enabled"])
    systemd.service(
        name="Schedule the nightly rolling restart"
        if enabled
        else "Stop the nightly rolling restart (restart_enabled is false)",
        service="seawall-restart.timer",
        running=enabled,
        enabled=enabled,
    )


def _put(name: str, target: str, context: Mapping[str, Any], mode: str = "644") -> Any:
    return files.put(
        name=name,
        src=StringIO(render(CONCERN, target, context)),
        dest=target,
        user="root",
        group="root",
        mode=mode,
    )
