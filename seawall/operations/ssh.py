"""SSH trust between inventory hosts: keys made on the hosts, only public halves move."""

import shlex
from collections.abc import Iterable
from io import StringIO

from pyinfra import host, inventory
from pyinfra.api import operation
from pyinfra.api.command import FileUploadCommand
from pyinfra.facts.files import File, FileContents

from seawall.facts import memo

# The host key types OpenSSH's server offers, in the order it prefers them.
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")


@operation()
def ssh_keypair(user: str, home: str):
    """
    Give ``user`` an ed25519 SSH key of its own, made on the host, if it has none.

    + user: the account
    + home: its home directory (the key goes to ``<home>/.ssh/id_ed25519``)

    **Example:**

    .. code:: python

        ssh_keypair(name="Give postgres an SSH key", user="postgres", home="/var/lib/postgresql")
    """
    key = f"{home}/.ssh/id_ed25519"
    if host.get_fact(File, path=key):
        host.noop(f"{user} has an SSH key")
        return
    ssh_dir = shlex.quote(f"{home}/.ssh")
    yield f"install -d -m 700 -o {user} -g {user} {ssh_dir}"
    yield (
        f"runuser -u {user} -- ssh-keygen -q -t ed25519 -N '' "
        f"-C {user}@{host.name} -f {shlex.quote(key)}"
    )


def unreachable(names: Iterable[str]) -> list[str]:
    """Return those of inventory hosts ``names`` this run could not reach, in order.

    pyinfra moves a host whose connect failed into ``state.failed_hosts``; asking
    it for a fact would stop the whole run.
    """
    failed = host.state.failed_hosts
    return [name for name in names if inventory.get_host(name) in failed]


def _content(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


@operation()
def trust_peers(
    user: str, home: str, peers: list[tuple[str, str, str]], command: str | None = None
):
    """
    Make ``user`` accept exactly the peers' SSH keys, and know exactly the peers' host keys.

    + user: the local account
    + home: its home directory
    + peers: (inventory host name, peer account's home, address) of every peer
    + command: the one command a peer's key may run (``command=``); None: any

    Each key is accepted only from its peer's address (``from=``) and with
    ``restrict``: no forwarding, no agent, no pty.

    Read from the peers when the operation runs, so keys made earlier in the
    same deploy are found; with a peer this run could not reach, nothing changes.

    **Example:**

    .. code:: python

        trust_peers(
            name="Trust the repository",
            user="postgres",
            home="/var/lib/postgresql",
            peers=[("ops-1", "/var/lib/pgbackrest", "10.77.0.41")],
        )
    """
    down = unreachable(name for name, _, _ in peers)
    if down:
        # "Exactly" cannot be known without the peer's keys, and a file without
        # them would lock it out once it is back: a redeploy while it is down
        # leaves what is trusted as it is.
        host.noop(f"{', '.join(down)} unreachable: {user}'s trusted keys left as they are")
        return
    authorized, known = [], []
    for name, peer_home, address in peers:
        peer = inventory.get_host(name)
        public = memo.get_fact(peer, FileContents, path=f"{peer_home}/.ssh/id_ed25519.pub") or []
        # Every host key the peer offers: ssh's UpdateHostKeys would otherwise add
        # the others to known_hosts at the first login, and the next deploy would
        # see that as drift (a host with RSA and ECDSA keys too, as Vagrant's are).
        host_keys = [
            line
            for kind in HOST_KEY_TYPES
            for line in memo.get_fact(peer, FileContents, path=f"/etc/ssh/ssh_host_{kind}_key.pub")
            or []
        ]
        if not public or not host_keys:
            host.log(f"{name} has no SSH key yet: trust it at the next deploy")
            continue
        options = f'from="{address}",restrict'
        if command is not None:
            options += f',command="{command}"'
        authorized.append(f"{options} {public[0].strip()}")
        known += [f"{address} {' '.join(key.split()[:2])}" for key in host_keys]
    changed = False
    for path, lines in (
        (f"{home}/.ssh/authorized_keys", authorized),
        (f"{home}/.ssh/known_hosts", known),
    ):
        current = host.get_fact(FileContents, path=path)
        if current is not None and _content(current) == _content(lines):
            continue
        changed = True
        yield f"install -d -m 700 -o {user} -g {user} {shlex.quote(home + '/.ssh')}"
        yield FileUploadCommand(
            StringIO(_content(lines)), path, remote_temp_filename=host.get_temp_filename(path)
        )
        yield f"chown {user}:{user} {shlex.quote(path)} && chmod 600 {shlex.quote(path)}"
    if not changed:
        host.noop(f"{user} trusts exactly its peers")


@operation()
def key_trusted(user: str, home: str, peer: str, peer_key: str):
    """
    Make ``user`` accept one peer's SSH key, keeping every other key it accepts.

    + user: the local account
    + home: its home directory (``<home>/.ssh/authorized_keys``)
    + peer: the inventory host that holds the key
    + peer_key: the public key's path on the peer

    Read from the peer when the operation runs, so a key made earlier in the
    same deploy is found; a peer this run could not reach changes nothing. A
    line with the same comment (``user@host``, as ``ssh_keypair`` makes them) is
    replaced: a remade key is not trusted twice.

    **Example:**

    .. code:: python

        key_trusted(
            name="Let the ops host in",
            user="root",
            home="/root",
            peer="ops-1",
            peer_key="/root/.ssh/id_ed25519.pub",
        )
    """
    if unreachable([peer]):
        # A redeploy while the ops host is down is normal: its key cannot be read,
        # and asking for it would stop the whole run; what is trusted stays.
        host.noop(f"{peer} unreachable: {user}'s trust of its key left as it is")
        return
    public = memo.get_fact(inventory.get_host(peer), FileContents, path=peer_key) or []
    if not public or len(public[0].split()) < 2:
        host.log(f"{peer} has no SSH key yet: trust it at the next deploy")
        host.noop(f"{user} accepts no key of {peer} yet")
        return
    line = public[0].strip()
    comment = " ".join(line.split()[2:])
    path = f"{home}/.ssh/authorized_keys"
    current = host.get_fact(FileContents, path=path) or []
    if line in (existing.strip() for existing in current):
        host.noop(f"{user} accepts {peer}'s key")
        return
    kept = [
        existing.rstrip("\n")
        for existing in current
        if not (comment and " ".join(existing.split()[2:]) == comment)
    ]
    yield f"install -d -m 700 -o {user} -g {user} {shlex.quote(home + '/.ssh')}"
    yield FileUploadCommand(
        StringIO(_content([*kept, line])), path, remote_temp_filename=host.get_temp_filename(path)
    )
    yield f"chown {user}:{user} {shlex.quote(path)} && chmod 600 {shlex.quote(path)}"
