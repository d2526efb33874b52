"""pgBackRest: WAL archive and nightly full backups in a repository on the ops host.

``deploy_pgbackrest()`` guarantees:

- on every ``postgres`` host: ``pgbackrest`` installed, configured to push WAL
  to the repository (Patroni's ``archive_command``, set by the postgres deploy),
  and the ``postgres`` user's own SSH key, trusted by the repository account
  only;
- on the ``ops`` host: the ``pgbackrest_user`` account owns the repository
  (``pgbackrest_repo_path``, 0750), its SSH key is trusted by ``postgres`` on
  the Postgres hosts only, the stanza exists, and a systemd timer runs a full
  backup at ``pgbackrest_full_backup_calendar`` (retention: full backups of
  the last ``pgbackrest_retention_days`` days); PostgreSQL's binaries are
  there (no cluster) for ``seawall drill pg-restore``;
- each account trusts exactly the other side's key and host key: SSH keys are
  made on the hosts themselves and never leave them (only public halves move);
  a peer's key is accepted only from its address, with no forwarding or pty,
  and runs pgBackRest's remote protocol only (``REMOTE_COMMAND``), never a shell.

What it never does:

- run a backup or a restore by itself (the timer and the drill do);
- copy a private key anywhere, or put a password on a command line;
- touch a Patroni member's data directory.
"""

from collections.abc import Mapping, Sequence
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.host import HostData
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from seawall.components.common import group_members, install_packages
from seawall.components.postgres import forbid_main_cluster
from seawall.components.templates import render
from seawall.defaults import PGBACKREST, POSTGRES
from seawall.names import BACKUP_SERVICE as SERVICE
from seawall.names import BACKUP_TIMER as TIMER
from seawall.names import data_dir
from seawall.operations.pgbackrest import stanza
from seawall.operations.ssh import ssh_keypair, trust_peers
from seawall.settings import setting

CONCERN = "pgbackrest"
CONFIG = "/etc/pgbackrest/pgbackrest.conf"
# The only command a peer's backup key runs (authorized_keys command=).
REMOTE_COMMAND = "/usr/local/libexec/seawall-pgbackrest-remote"
RESTORE_CONFIG = "/etc/pgbackrest/restore-drill.conf"
TEMPLATES: tuple[str, ...] = (CONFIG, RESTORE_CONFIG, SERVICE, TIMER, REMOTE_COMMAND)
POSTGRES_HOME = "/var/lib/postgresql"
DEFAULTS: dict[str, Any] = {**POSTGRES, **PGBACKREST}


def backup_context(
    data: Mapping[str, Any] | HostData,
    repo: bool,
    members: Sequence[tuple[str, str]],
    repo_address: str,
) -> dict[str, Any]:
    """Return what the pgBackRest templates see on a repository (``repo``) or Postgres host."""
    context = {key: setting(data, key) for key in DEFAULTS}
    context.update(
        repo=repo,
        members=[{"name": name, "address": address} for name, address in members],
        repo_address=repo_address,
        data_dir=data_dir(context),
    )
    return context


def _put(name: str, target: str, context: Mapping[str, Any], mode: str = "644") -> Any:
    return files.put(
        name=name,
        src=StringIO(render(CONCERN, target, context)),
        dest=target,
        user="root",
        group="root",
        mode=mode,
    )


@deploy("pgBackRest backups", data_defaults=DEFAULTS)
def deploy_pgbackrest() -> None:
    """
    Set up WAL archiving and nightly backups: Postgres hosts push, the ops host keeps.

    Hosts in neither the ``postgres`` nor the ``ops`` group are left alone.

    **Example:**

    .. code:: python

        from seawall.components.pgbackrest import deploy_pgbackrest

        deploy_pgbackrest()
    """
    repos = inventory.get_group("ops", default=[])
    is_repo = bool(repos) and host.name == repos[0].name
    if not repos or not (is_repo or "postgres" in host.groups):
        return
    data = host.data
    user, repo_path = (
        str(setting(data, "pgbackrest_user")),
        str(setting(data, "pgbackrest_repo_path")),
    )
    members = group_members("postgres")
    repo_address = str(repos[0].data.get("private_address"))
    context = backup_context(data, is_repo, members, repo_address)

    # Phases run in the same order on every host (pyinfra orders operations by
    # where they are called): every key exists before any host trusts its peers.
    if is_repo:
        account, home = user, repo_path
        peers = [(name, POSTGRES_HOME, address) for name, address in members]
    else:
        account, home = "postgres", POSTGRES_HOME
        peers = [(repos[0].name, repo_path, repo_address)]
    _install(data, is_repo)
    _configure(context, is_repo, account, home, peers)
    if is_repo:
        _activate(context)


def _install(data: HostData, is_repo: bool) -> None:
    """Install pgBackRest; on the repository also Postgres's binaries and the repository account."""
    if is_repo:
        # Postgres's binaries serve the restore drill; no cluster may appear.
        forbid_main_cluster()
        packages = ["pgbackrest", f"postgresql-{setting(data, 'postgres_version')}"]
    else:
        packages = ["pgbackrest"]
    install_packages("Install pgBackRest", packages)
    if not is_repo:
        return
    user, repo_path = (
        str(setting(data, "pgbackrest_user")),
        str(setting(data, "pgbackrest_repo_path")),
    )
    server.user(
        name=f"Create the repository account {user}",
        user=user,
        home=repo_path,
        shell="/bin/bash",
        system=True,
        create_home=True,
    )
    files.directory(
        name="Keep the repository private to its account",
        path=repo_path,
        user=user,
        group=user,
        mode="750",
    )
    files.directory(
        name="Create the repository's log directory",
        path=f"{repo_path}/log",
        user=user,
        group=user,
        mode="750",
    )


def _configure(
    context: Mapping[str, Any],
    is_repo: bool,
    account: str,
    home: str,
    peers: list[tuple[str, str, str]],
) -> None:
    """Write pgBackRest's files, give ``account`` its key and trust exactly ``peers``."""
    if is_repo:
        _put("Configure the restore drill's pgBackRest", RESTORE_CONFIG, context)
    ssh_keypair(name="Give the backup account an SSH key of its own", user=account, home=home)
    _put("Configure pgBackRest", CONFIG, context)
    _put("Let peers' keys run pgBackRest's remote protocol only", REMOTE_COMMAND, {}, "755")
    trust_peers(
        name="Trust exactly the peers' backup keys (repository <-> Postgres hosts)",
        user=account,
        home=home,
        peers=peers,
        command=REMOTE_COMMAND,
    )


def _activate(context: Mapping[str, Any]) -> None:
    """On the repository: create the stanza, then install and schedule the nightly full backup.

    The backup units come after the stanza (the order the lab's no-change rerun
    was recorded with), so a timer never fires before its stanza exists.
    """
    user = str(context["pgbackrest_user"])
    stanza(name="Create the pgBackRest stanza", user=user, stanza=context["pgbackrest_stanza"])
    service = _put("Install the full backup service", SERVICE, context)
    timer = _put("Install the nightly full backup timer", TIMER, context)
    systemd.daemon_reload(
        name="Reload systemd (the backup units changed)",
        _if=any_changed(service, timer),
    )
    systemd.service(
        name="Schedule the nightly full backup",
        service="seawall-pgbackrest-full.timer",
        running=True,
        enabled=True,
    )
