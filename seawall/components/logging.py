"""The central journal: every host's journal shipped to the ops host, ``deploy_logging()``.

What it guarantees:

- on the ``ops`` host (the first of the group): ``systemd-journal-remote``
  listens, socket-activated, on its private address at ``journal_remote_port``
  over HTTPS, and writes one journal file per sending host under
  ``/var/log/journal/remote`` (``seawall.names.CENTRAL_JOURNAL``), which
  ``seawall logs`` searches; a timer vacuums it to ``journal_remote_max_use``
  and ``journal_remote_max_retention`` at ``journal_remote_vacuum_calendar``
  (systemd 252's journal-remote has no size limit of its own);
- on every host, the ops host included (its own logs belong in the central
  journal too, and nothing else reads them there): ``systemd-journal-upload``
  sends the host's journal to the ops host, verifying the server's certificate
  against the seawall journal CA; it resumes from the cursor of the last entry
  the server accepted (``--save-state``) and retries every 5 s for as long as
  the ops host is away (``Restart=always``, no start limit), so an outage of
  the ops host loses no entry (journal-upload 252 sends the entry at its
  cursor once more on resuming: ``seawall logs`` shows such a twin once);
- TLS from a CA made on the ops host (``/etc/seawall/journal-ca``): every host
  makes its own key (``/etc/seawall/journal-tls/host.key``, root:
  ``seawall-journal-tls`` 0640) and a request; the ops host signs each request
  with the host's inventory name and private address (never what the request
  asks for) and renews a certificate ``journal_tls_renew_days`` before it
  expires, or when a host's key or address changed; each host installs its
  certificate and the CA's. One deploy sets it all up (requests are read when
  the signing runs, after every host made its own); a second changes nothing;
- ``journal-remote`` and ``journal-upload`` restart only when their
  configuration or certificate changed; the journal sink runs on the ops host
  only.

What it never does:

- copy a private key: only requests and certificates move between hosts;
- sign what a request asks for beyond its key: names, addresses and
  extensions are the CA's own;
- replace the CA (a CA certificate without its key stops the deploy: every
  host trusts that certificate);
- check client certificates on Debian 12: its journal-remote is built without
  GnuTLS and cannot (the CA file is configured for one that can); who may
  send is the port's firewall rule's to decide;
- delete an active journal file: the vacuum removes archived files only.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.host import HostData
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from seawall.components.common import install_packages
from seawall.components.templates import render
from seawall.defaults import LOGGING
from seawall.names import CENTRAL_JOURNAL
from seawall.operations import files, systemd
from seawall.operations.tls import REQUEST, tls_ca, tls_certificate, tls_key, tls_signed
from seawall.settings import setting

CONCERN = "logging"
UPLOAD_CONFIG = "/etc/systemd/journal-upload.conf.d/seawall.conf"
UPLOAD_DROPIN = "/etc/systemd/system/systemd-journal-upload.service.d/seawall.conf"
REMOTE_CONFIG = "/etc/systemd/journal-remote.conf.d/seawall.conf"
REMOTE_DROPIN = "/etc/systemd/system/systemd-journal-remote.service.d/seawall.conf"
SOCKET_DROPIN = "/etc/systemd/system/systemd-journal-remote.socket.d/seawall.conf"
VACUUM_SERVICE = "/etc/systemd/system/seawall-journal-vacuum.service"
VACUUM_TIMER = "/etc/systemd/system/seawall-journal-vacuum.timer"
TEMPLATES: tuple[str, ...] = (
    UPLOAD_CONFIG,
    UPLOAD_DROPIN,
    REMOTE_CONFIG,
    REMOTE_DROPIN,
    SOCKET_DROPIN,
    VACUUM_SERVICE,
    VACUUM_TIMER,
)
# Both tools come in one Debian package; openssl makes keys and requests.
PACKAGES = ["systemd-journal-remote", "openssl"]
TLS_DIR = "/etc/seawall/journal-tls"
CA_DIR = "/etc/seawall/journal-ca"
# The group whose services read a host's TLS key: journal-upload (a dynamic
# user) and journal-remote, through SupplementaryGroups=.
TLS_GROUP = "seawall-journal-tls"
CA_NAME = "seawall journal CA"
# The CA outlives every certificate it signs many times over; replacing it
# means every host trusting a new one.
CA_DAYS = 3650
UPLOAD_UNIT = "systemd-journal-upload.service"
REMOTE_UNIT = "systemd-journal-remote.service"
REMOTE_SOCKET = "systemd-journal-remote.socket"
VACUUM_UNIT = "seawall-journal-vacuum.timer"


def logging_context(
    data: Mapping[str, Any] | HostData, remote_host: str, remote_address: str
) -> dict[str, Any]:
    """Return what the logging templates see on a host; ``remote_*`` name the ops host."""
    context = {key: setting(data, key) for key in LOGGING}
    context.update(
        address=str(data.get("private_address")),
        remote_host=remote_host,
        remote_address=remote_address,
        tls_dir=TLS_DIR,
        tls_group=TLS_GROUP,
        central_journal=CENTRAL_JOURNAL,
    )
    return context


@dataclass(frozen=True)
class _Changed:
    """What the activate phase restarts on."""

    # Each daemon's certificate, configuration and unit drop-in.
    upload: list[OperationMeta]
    remote: list[OperationMeta]
    socket: list[OperationMeta]
    # Every unit file: systemd reloads when one changed.
    units: list[OperationMeta]


@deploy("Central journal", data_defaults=LOGGING)
def deploy_logging() -> None:
    """
    Ship every host's journal to the ops host's central journal, over HTTPS.

    Does nothing in an inventory without an ``ops`` host.

    **Example:**

    .. code:: python

        from seawall.components.logging import deploy_logging

        deploy_logging()
    """
    sinks = inventory.get_group("ops", default=[])
    if not sinks:
        return
    sink = sinks[0]
    is_sink = host.name == sink.name
    context = logging_context(host.data, sink.name, str(sink.data.get("private_address")))
    # Hosts this run reaches: pyinfra fails (or --exclude leaves out) the
    # others before any operation, and asking one for a fact would fail the asker.
    active = set(inventory.get_active_hosts())
    _install()
    certificate = _certificates(context, is_sink, sink.name, sink in active, active)
    changed = _configure(context, is_sink, certificate)
    _activate(is_sink, changed)


def _install() -> None:
    install_packages("Install the journal upload and remote tools", PACKAGES)
    server.group(
        name=f"Create the group {TLS_GROUP} (reads the TLS key)", group=TLS_GROUP, system=True
    )


def _certificates(
    context: Mapping[str, Any], is_sink: bool, sink: str, sink_active: bool, active: set[Any]
) -> list[OperationMeta]:
    """Make keys, sign requests and install certificates; return the operations that may change.

    Called in the same order on every host (pyinfra orders operations by where
    they are called): every host's request exists before the ops host signs,
    and every certificate is signed before any host installs its own.
    """
    if is_sink:
        tls_ca(
            name="Make the journal CA (its key never leaves this host)",
            directory=CA_DIR,
            common_name=CA_NAME,
            days=CA_DAYS,
        )
    tls_key(
        name="Give this host a TLS key of its own and a request for it",
        directory=TLS_DIR,
        common_name=host.name,
        group=TLS_GROUP,
    )
    if is_sink:
        tls_signed(
            name="Sign every host's journal certificate (name and address from the inventory)",
            directory=CA_DIR,
            peers=[
                (peer.name, f"{TLS_DIR}/{REQUEST}", str(peer.data.get("private_address")))
                for peer in inventory
                if peer in active
            ],
            days=context["journal_tls_days"],
            renew_days=context["journal_tls_renew_days"],
        )
    if not sink_active:
        host.log(f"{sink} is not in this run: this host's certificate waits for the next deploy")
        return []
    return [
        tls_certificate(
            name="Install this host's journal certificate and the CA's",
            directory=TLS_DIR,
            ca_host=sink,
            ca_directory=CA_DIR,
            renew_days=context["journal_tls_renew_days"],
        )
    ]


def _put(name: str, target: str, context: Mapping[str, Any]) -> OperationMeta:
    return files.put(
        name=name,
        src=StringIO(render(CONCERN, target, context)),
        dest=target,
        user="root",
        group="root",
        mode="644",
    )


def _configure(
    context: Mapping[str, Any], is_sink: bool, certificate: list[OperationMeta]
) -> _Changed:
    upload_dropin = _put(
        "Keep the journal upload retrying through any outage (from its saved cursor)",
        UPLOAD_DROPIN,
        context,
    )
    upload = [
        *certificate,
        _put("Send this host's journal to the central journal", UPLOAD_CONFIG, context),
        upload_dropin,
    ]
    if not is_sink:
        return _Changed(upload=upload, remote=[], socket=[], units=[upload_dropin])
    remote_dropin = _put("Let the journal sink read its TLS key", REMOTE_DROPIN, context)
    remote = [
        *certificate,
        _put("Serve the central journal over HTTPS", REMOTE_CONFIG, context),
        remote_dropin,
    ]
    socket = _put("Listen for journals on the private address only", SOCKET_DROPIN, context)
    vacuum = [
        _put("Install the central journal's vacuum", VACUUM_SERVICE, context),
        _put("Schedule the central journal's vacuum", VACUUM_TIMER, context),
    ]
    return _Changed(
        upload=upload,
        remote=remote,
        socket=[socket],
        units=[upload_dropin, remote_dropin, socket, *vacuum],
    )


def _activate(is_sink: bool, changed: _Changed) -> None:
    systemd.daemon_reload(
        name="Reload systemd (the journal units changed)", _if=any_changed(*changed.units)
    )
    if is_sink:
        # A socket listening elsewhere is stopped with its service, then
        # listens anew; the next upload starts the service.
        server.shell(
            name="Move the journal sink's socket to its address (its unit changed)",
            commands=[f"systemctl stop {REMOTE_UNIT} {REMOTE_SOCKET}"],
            _if=any_changed(*changed.socket),
        )
        systemd.service(
            name="Listen for journals (socket-activated)",
            service=REMOTE_SOCKET,
            running=True,
            enabled=True,
        )
        # Socket-activated: restart it only if it runs (the next upload starts it).
        server.shell(
            name="Restart the journal sink if it runs (its configuration changed)",
            commands=[f"systemctl try-restart {REMOTE_UNIT}"],
            _if=any_changed(*changed.remote),
        )
        systemd.service(
            name="Vacuum the central journal on schedule",
            service=VACUUM_UNIT,
            running=True,
            enabled=True,
        )
    else:
        systemd.service(
            name="Keep the journal sink off (the ops host runs it)",
            service=REMOTE_SOCKET,
            running=False,
            enabled=False,
        )
    systemd.service(
        name="Restart the journal upload (its configuration changed)",
        service=UPLOAD_UNIT,
        running=True,
        restarted=True,
        _if=any_changed(*changed.upload),
    )
    systemd.service(
        name="Upload this host's journal to the central journal",
        service=UPLOAD_UNIT,
        running=True,
        enabled=True,
    )
