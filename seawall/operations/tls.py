"""A private CA on one host: keys made where they are used, only requests and certificates move."""

import shlex
from collections.abc import Sequence
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import OperationError, operation
from pyinfra.api.command import FileUploadCommand
from pyinfra.facts.files import File, FileContents

from seawall.facts import memo
from seawall.facts.tls import TlsCertificate, TlsRequest

# ECDSA P-256: both TLS stacks the journal tools link (libmicrohttpd's GnuTLS,
# curl's OpenSSL) take it, and a key is made in milliseconds (RSA 3072 takes
# seconds on a busy host).
_GENKEY = "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out"
KEY, REQUEST, CERTIFICATE, CA_CERTIFICATE = "host.key", "host.csr", "host.pem", "ca.pem"


def _text(lines: list[str] | None) -> str:
    return "".join(f"{line.strip()}\n" for line in lines or [] if line.strip())


def _upload(content: str, dest: str):
    return FileUploadCommand(
        StringIO(content), dest, remote_temp_filename=host.get_temp_filename(dest)
    )


@operation()
def tls_ca(directory: str, common_name: str, days: int):
    """
    Make a CA (key and self-signed certificate) in ``directory`` if it has none.

    + directory: the CA's directory, root-only (0700): ``ca.key``, ``ca.pem``, ``certs/``
    + common_name: the CA certificate's subject CN
    + days: the CA certificate's lifetime

    The key is made here and never leaves the host. A CA certificate without
    its key is refused, never replaced: every host trusts that certificate.

    **Example:**

    .. code:: python

        tls_ca(
            name="Make the journal CA",
            directory="/etc/seawall/journal-ca",
            common_name="seawall journal CA",
            days=3650,
        )
    """
    key, cert = f"{directory}/ca.key", f"{directory}/{CA_CERTIFICATE}"
    has_key, has_cert = bool(host.get_fact(File, path=key)), bool(host.get_fact(File, path=cert))
    if has_key and has_cert:
        host.noop(f"the CA in {directory} exists")
        return
    if has_cert:
        raise OperationError(f"{cert} exists without its key {key}: restore the key")
    quoted = shlex.quote(directory)
    yield f"install -d -m 700 -o root -g root {quoted} {quoted}/certs {quoted}/requests"
    if not has_key:
        yield f"umask 077 && {_GENKEY} {shlex.quote(key)}"
    yield (
        f"openssl req -x509 -new -key {shlex.quote(key)} -subj {shlex.quote('/CN=' + common_name)} "
        f"-days {int(days)} -addext basicConstraints=critical,CA:TRUE "
        f"-addext keyUsage=critical,keyCertSign,cRLSign -out {shlex.quote(cert)}"
    )


@operation()
def tls_key(directory: str, common_name: str, group: str):
    """
    Give the host a private key of its own (made here, never copied) and a request for it.

    + directory: where ``host.key`` (root:``group`` 0640) and ``host.csr`` go
    + common_name: the request's subject CN (the CA sets the certificate's own)
    + group: the group whose services may read the key

    **Example:**

    .. code:: python

        tls_key(
            name="Give this host a journal TLS key",
            directory="/etc/seawall/journal-tls",
            common_name="app-1",
            group="seawall-journal-tls",
        )
    """
    key, request = f"{directory}/{KEY}", f"{directory}/{REQUEST}"
    current = host.get_fact(File, path=key)
    has_request = bool(host.get_fact(File, path=request))
    quoted_key = shlex.quote(key)
    owned = bool(current and current["group"] == group and current["mode"] == 640)
    if current and owned and has_request:
        host.noop(f"{common_name} has a TLS key and its request")
        return
    if current is False:
        raise OperationError(f"{key} exists and is not a file")
    if not current:
        yield f"install -d -m 755 -o root -g root {shlex.quote(directory)}"
        yield f"umask 077 && {_GENKEY} {quoted_key}"
    if not current or not owned:
        yield f"chown root:{group} {quoted_key} && chmod 640 {quoted_key}"
    if not current or not has_request:
        yield (
            f"openssl req -new -key {quoted_key} -subj {shlex.quote('/CN=' + common_name)} "
            f"-out {shlex.quote(request)}"
        )


# Both: a journal certificate serves journal-remote and identifies journal-upload.
BOTH_USAGES = "serverAuth,clientAuth"


def _addresses(address: str, extra: Sequence[str] | None) -> list[str]:
    return [address, *(one for one in extra or [] if one != address)]


def _san(name: str, addresses: Sequence[str], names: Sequence[str]) -> list[str]:
    """The subjectAltName entries, in the order ``openssl x509 -ext`` prints them back."""
    return [f"DNS:{one}" for one in (name, *names)] + [f"IP:{one}" for one in addresses]


def _printed_san(name: str, addresses: Sequence[str], names: Sequence[str]) -> str:
    """The subjectAltName as ``TlsCertificate`` reads it back (openssl's "IP Address", unspaced)."""
    return ",".join(_san(name, addresses, names)).replace("IP:", "IPAddress:")


def _extensions(name: str, addresses: Sequence[str], names: Sequence[str], usage: str) -> str:
    # The CA states every extension itself: nothing a request asks for is copied.
    return (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\n"
        f"subjectAltName={','.join(_san(name, addresses, names))}\n"
    )


@operation()
def tls_signed(
    directory: str,
    peers: list[tuple[str, str, str]],
    days: int,
    renew_days: int,
    names: Sequence[str] = (),
    extended_key_usage: str = BOTH_USAGES,
    extra_addresses: Sequence[str] | None = None,
):
    """
    Sign each peer's request with the CA in ``directory``, unless its certificate is current.

    + directory: the CA's directory (``tls_ca``); certificates go to ``certs/<name>.pem``
    + peers: (inventory host name, path of its request there, its address) of every peer
    + days: a new certificate's lifetime
    + renew_days: a certificate with fewer days left, for another key or another
      name or address, is signed again
    + names: DNS names every peer's certificate carries besides its own name
      (``localhost`` for a server its own host dials by that name)
    + extended_key_usage: what a certificate may do (``serverAuth`` for a server only)
    + extra_addresses: addresses every certificate names besides the peer's own
      (``127.0.0.1`` for a server its own host's tools reach on loopback)

    Requests are read from the peers when the operation runs, so a request
    made earlier in the same deploy is signed in it. The certificate's names,
    address and usages come from the inventory and these arguments, never
    from the request.

    **Example:**

    .. code:: python

        tls_signed(
            name="Sign every host's journal certificate",
            directory="/etc/seawall/journal-ca",
            peers=[("app-1", "/etc/seawall/journal-tls/host.csr", "10.77.0.21")],
            days=397,
            renew_days=30,
        )
    """
    ca_key, ca_cert = shlex.quote(f"{directory}/ca.key"), shlex.quote(f"{directory}/ca.pem")

    def certificate(name: str) -> dict[str, Any]:
        return {
            "path": f"{directory}/certs/{name}.pem",
            "ca": f"{directory}/ca.pem",
            "valid_days": renew_days,
        }

    # Every request and certificate at once, not two round trips per peer in turn.
    memo.ask_all(
        [(inventory.get_host(name), TlsRequest, {"path": path}) for name, path, _ in peers]
        + [(host, TlsCertificate, certificate(name)) for name, _, _ in peers]
    )
    signed = False
    for name, request_path, address in peers:
        request = memo.get_fact(inventory.get_host(name), TlsRequest, path=request_path)
        if request is None:
            host.log(f"{name} has no certificate request yet: sign it at the next deploy")
            continue
        cert_path = certificate(name)["path"]
        current = memo.get_fact(host, TlsCertificate, **certificate(name))
        addresses = _addresses(address, extra_addresses)
        if (
            current is not None
            and current["valid"]
            and current["key_sha256"] == request["key_sha256"]
            and current["san"] == _printed_san(name, addresses, names)
        ):
            continue
        signed = True
        staged = f"{directory}/requests/{name}"
        yield f"install -d -m 700 -o root -g root {shlex.quote(directory + '/requests')}"
        yield _upload(request["pem"], f"{staged}.csr")
        yield _upload(_extensions(name, addresses, names, extended_key_usage), f"{staged}.ext")
        new = shlex.quote(f"{cert_path}.seawall-new")
        # The request's own signature is checked (it proves the key); its
        # subject is replaced by the inventory name.
        yield (
            f"openssl x509 -req -in {shlex.quote(staged + '.csr')} -CA {ca_cert} -CAkey {ca_key} "
            f"-subj {shlex.quote('/CN=' + name)} -days {int(days)} "
            f"-extfile {shlex.quote(staged + '.ext')} -out {new} && "
            f"chmod 644 {new} && mv -f {new} {shlex.quote(cert_path)}"
        )
    if not signed:
        host.noop("every peer's certificate is signed and current")


@operation()
def tls_certificate(directory: str, ca_host: str, ca_directory: str, renew_days: int):
    """
    Install this host's certificate and the CA's certificate, as signed on ``ca_host``.

    + directory: this host's TLS directory (``tls_key``): ``host.pem`` and ``ca.pem`` go there
    + ca_host: the inventory name of the CA's host
    + ca_directory: the CA's directory there (``tls_signed`` wrote ``certs/<name>.pem``)
    + renew_days: passed to the CA host's certificate check (see ``tls_signed``)

    A certificate for another key than this host's own is never installed.
    Read from the CA's host when the operation runs.

    **Example:**

    .. code:: python

        tls_certificate(
            name="Install this host's journal certificate",
            directory="/etc/seawall/journal-tls",
            ca_host="ops-1",
            ca_directory="/etc/seawall/journal-ca",
            renew_days=30,
        )
    """
    ca = inventory.get_host(ca_host)
    certificate: dict[str, Any] = {
        "path": f"{ca_directory}/certs/{host.name}.pem",
        "ca": f"{ca_directory}/{CA_CERTIFICATE}",
        "valid_days": renew_days,
    }
    ca_file: dict[str, Any] = {"path": certificate["ca"]}
    installed = {target: f"{directory}/{target}" for target in (CERTIFICATE, CA_CERTIFICATE)}
    request_file: dict[str, Any] = {"path": f"{directory}/{REQUEST}"}
    # All five at once, not one round trip after another.
    memo.ask_all(
        [(ca, TlsCertificate, certificate), (ca, FileContents, ca_file)]
        + [(host, TlsRequest, request_file)]
        + [(host, FileContents, {"path": path}) for path in installed.values()]
    )
    signed = memo.get_fact(ca, TlsCertificate, **certificate)
    ca_pem = _text(memo.get_fact(ca, FileContents, **ca_file))
    request = memo.get_fact(host, TlsRequest, **request_file)
    if signed is None or not ca_pem:
        host.log(f"{ca_host} has not signed a certificate for {host.name} yet: at the next deploy")
        host.noop(f"{host.name} waits for its certificate")
        return
    if request is None or signed["key_sha256"] != request["key_sha256"]:
        host.log(f"{ca_host} holds a certificate for another key: it signs this one next deploy")
        host.noop(f"{host.name} waits for its certificate")
        return
    changed = False
    for target, content in ((CERTIFICATE, signed["pem"]), (CA_CERTIFICATE, ca_pem)):
        path = installed[target]
        if _text(memo.get_fact(host, FileContents, path=path)) == content:
            continue
        changed = True
        yield _upload(content, path)
        yield f"chown root:root {shlex.quote(path)} && chmod 644 {shlex.quote(path)}"
    if not changed:
        host.noop(f"{host.name} has its current certificate and the CA's")


@operation()
def tls_ca_trusted(directory: str, ca_host: str, ca_directory: str):
    """
    Install the CA's certificate (only) from ``ca_host``, for a host that checks servers with it.

    + directory: where ``ca.pem`` goes (root:root 0644; the directory root:root 0755)
    + ca_host: the inventory name of the CA's host
    + ca_directory: the CA's directory there (``tls_ca``)

    For a client that holds no key of its own. Read from the CA's host when the
    operation runs, so a CA made earlier in the same deploy is installed.

    **Example:**

    .. code:: python

        tls_ca_trusted(
            name="Trust the Postgres CA",
            directory="/etc/seawall/postgres-tls",
            ca_host="ops-1",
            ca_directory="/etc/seawall/postgres-ca",
        )
    """
    # Through the memo: every client asks the CA's host at once (16 app hosts
    # passed sshd's MaxSessions on it at 21 hosts); asked once, within its bound.
    ca_pem = _text(
        memo.get_fact(
            inventory.get_host(ca_host), FileContents, path=f"{ca_directory}/{CA_CERTIFICATE}"
        )
    )
    if not ca_pem:
        host.log(f"{ca_host} has no CA in {ca_directory} yet: it is installed at the next deploy")
        host.noop(f"{host.name} waits for the CA's certificate")
        return
    path = f"{directory}/{CA_CERTIFICATE}"
    if _text(host.get_fact(FileContents, path=path)) == ca_pem:
        host.noop(f"{host.name} trusts the CA of {ca_host}:{ca_directory}")
        return
    yield f"install -d -m 755 -o root -g root {shlex.quote(directory)}"
    yield _upload(ca_pem, path)
    yield f"chown root:root {shlex.quote(path)} && chmod 644 {shlex.quote(path)}"


def _missing(directory: str, key_group: str | None) -> str | None:
    """Return what ``directory`` lacks for TLS now (see ``tls_ready``), or None."""
    ca = f"{directory}/{CA_CERTIFICATE}"
    if not host.get_fact(File, path=ca):
        return f"no CA certificate {ca}"
    if key_group is None:
        return None
    key, cert = f"{directory}/{KEY}", f"{directory}/{CERTIFICATE}"
    state = host.get_fact(File, path=key)
    if not state:
        return f"no key {key}"
    if (state["user"], state["group"], state["mode"]) != ("root", key_group, 640):
        return f"{key} is not root:{key_group} 0640"
    request = host.get_fact(TlsRequest, path=f"{directory}/{REQUEST}")
    signed = host.get_fact(TlsCertificate, path=cert, ca=ca, valid_days=0)
    if signed is None or not signed["valid"]:
        return f"no current certificate {cert} from the CA in {ca}"
    if request is None or signed["key_sha256"] != request["key_sha256"]:
        return f"{cert} is not for the key {key}"
    return None


@operation()
def tls_ready(directory: str, key_group: str | None = None):
    """
    Stop this host, saying what is missing, unless ``directory`` holds what TLS needs now.

    + directory: the host's TLS directory: the CA's certificate (``ca.pem``) and, with
      ``key_group``, the host's key and a certificate for it from that CA
    + key_group: for a server: the group that reads its key (``root:<group>`` 0640);
      None for a client, which needs the CA's certificate only

    Put right before the operation that makes a daemon use these files, so a
    daemon is never told to serve or check TLS with files it lacks. Decided
    when the operation runs: files an earlier operation of the same deploy
    installs count. Where they are missing when the deploy is planned, the plan
    shows the check as a change (a command that stops the host), and the run
    finds them there or stops.

    **Example:**

    .. code:: python

        tls_ready(
            name="Check this member's TLS files before Patroni turns TLS on",
            directory="/etc/seawall/postgres-tls",
            key_group="postgres",
        )
    """
    missing = _missing(directory, key_group)
    if missing is None:
        host.noop(f"{directory} holds what TLS needs")
        return
    yield f"echo {shlex.quote(f'{host.name}: {missing}: TLS cannot be turned on')} >&2; exit 1"
