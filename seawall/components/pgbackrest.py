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
- the repository is encrypted (``pgbackrest_cipher_type``, AES-256) at
  ``pgbackrest_cipher_repo_path``, with the ``pgbackrest_cipher_pass`` secret.
  Only the repository host holds the pass, in its two pgBackRest files
  (root:``pgbackrest_user`` 0640, written through ``secret_file``): a Postgres
  host's pgBackRest, pushing WAL through the repository host, asks that
  host's for the cipher settings over its own protocol when none are set
  locally, so the pass is never in a Postgres host's files or command lines;
- an unencrypted repository (a deploy before encryption made one at
  ``pgbackrest_repo_path``) is replaced, never encrypted in place (pgBackRest
  cannot), and never removed before its replacement holds a full backup.
  One deploy, in this order (``operations.pgbackrest.repository``):

  1. the repository host's configuration names the encrypted repository
     (``PgbackrestRepositories`` tells the two apart by their ``backup.info``);
     WAL pushed from then on goes there, and the old repository keeps
     everything up to this point (until step 2 ends, pushes fail and Postgres
     keeps the segments and retries them: none is lost);
  2. ``stanza-create`` in the encrypted repository;
  3. one full backup into it (its WAL arrives there, as step 1 ordered): the
     only backup a deploy ever takes;
  4. ``pgbackrest info`` confirms that full backup; only then the old
     repository's ``archive/<stanza>`` and ``backup/<stanza>`` are removed.

  A failed step stops the deploy with the old repository intact; the next
  deploy starts again from what the files show. Until step 3 ends, a
  restore needs the old repository (its last backup and WAL up to step 1).
- each account trusts exactly the other side's key and host key: SSH keys are
  made on the hosts themselves and never leave them (only public halves move);
  a peer's key is accepted only from its address, with no forwarding or pty,
  and runs pgBackRest's remote protocol only (``REMOTE_COMMAND``), never a shell.

What it never does:

- run a backup or a restore by itself (the timer and the drill do), except
  the one full backup that lets an unencrypted repository go;
- delete a backup that no full backup in the encrypted repository replaces;
- copy a private key anywhere, or put a password on a command line;
- touch a Patroni member's data directory.
"""

from collections.abc import Mapping, Sequence
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.host import HostData
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from seawall.components.common import group_members, host_secrets, install_packages
from seawall.components.postgres import forbid_main_cluster
from seawall.components.templates import render
from seawall.defaults import PGBACKREST, POSTGRES
from seawall.names import BACKUP_SERVICE as SERVICE
from seawall.names import BACKUP_TIMER as TIMER
from seawall.names import data_dir
from seawall.operations import files, systemd
from seawall.operations.files import secret_file
from seawall.operations.pgbackrest import repository
from seawall.operations.ssh import ssh_keypair, trust_peers
from seawall.settings import setting

CONCERN = "pgbackrest"
CONFIG = "/etc/pgbackrest/pgbackrest.conf"
# The only command a peer's backup key runs (authorized_keys command=).
REMOTE_COMMAND = "/usr/local/libexec/seawall-pgbackrest-remote"
RESTORE_CONFIG = "/etc/pgbackrest/restore-drill.conf"
TEMPLATES: tuple[str, ...] = (CONFIG, RESTORE_CONFIG, SERVICE, TIMER, REMOTE_COMMAND)
POSTGRES_HOME = "/var/lib/postgresql"
CIPHER_SECRET = "pgbackrest_cipher_pass"
DEFAULTS: dict[str, Any] = {**POSTGRES, **PGBACKREST}


def backup_context(
    data: Mapping[str, Any] | HostData,
    repo: bool,
    members: Sequence[tuple[str, str]],
    repo_address: str,
    cipher_pass: str | None = None,
) -> dict[str, Any]:
    """Return what the pgBackRest templates see on a repository (``repo``) or Postgres host.

    ``cipher_pass`` is the repository's (the repository host's files only).
    """
    context = {key: setting(data, key) for key in DEFAULTS}
    context.update(
        repo=repo,
        cipher_pass=cipher_pass,
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
    cipher_pass = host_secrets([CIPHER_SECRET])[CIPHER_SECRET] if is_repo else None
    context = backup_context(data, is_repo, members, repo_address, cipher_pass)

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
        _put_secret("Configure the restore drill's pgBackRest", RESTORE_CONFIG, context)
    ssh_keypair(name="Give the backup account an SSH key of its own", user=account, home=home)
    if is_repo:
        _put_secret("Configure pgBackRest (the encrypted repository)", CONFIG, context)
    else:
        _put("Configure pgBackRest", CONFIG, context)
    _put("Let peers' keys run pgBackRest's remote protocol only", REMOTE_COMMAND, {}, "755")
    trust_peers(
        name="Trust exactly the peers' backup keys (repository <-> Postgres hosts)",
        user=account,
        home=home,
        peers=peers,
        command=REMOTE_COMMAND,
    )


def _put_secret(name: str, target: str, context: Mapping[str, Any]) -> Any:
    """Write a repository-host file that holds the cipher pass: its account reads it, no other."""
    return secret_file(
        name=name,
        src=render(CONCERN, target, context),
        dest=target,
        group=str(context["pgbackrest_user"]),
        mode=640,
        private_dir=False,
    )


def _activate(context: Mapping[str, Any]) -> None:
    """On the repository: bring the stanza up in the encrypted repository (retiring an
    unencrypted one), then install and schedule the nightly full backup.

    The backup units come after the stanza (the order the lab's no-change rerun
    was recorded with), so a timer never fires before its stanza exists.
    """
    user = str(context["pgbackrest_user"])
    repository(
        name="Create the stanza in the encrypted repository (and retire an unencrypted one)",
        user=user,
        stanza=str(context["pgbackrest_stanza"]),
        old_path=str(context["pgbackrest_repo_path"]),
        new_path=str(context["pgbackrest_cipher_repo_path"]),
    )
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
