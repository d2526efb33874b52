"""Facts about TLS keys, certificate requests and certificates, read with ``openssl``.

They give public material only (a request, a certificate, a public key's
digest): no private key is ever read.
"""

import shlex
from typing import Any

from pyinfra.api import FactBase

# sha256 of nothing: what the digest pipeline prints when openssl read no key.
_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _key_digest(show_pubkey: str) -> str:
    """The shell pipeline that prints the SHA-256 of a public key (DER), hex only."""
    return f"{show_pubkey} 2>/dev/null | openssl pkey -pubin -outform DER 2>/dev/null | sha256sum"


def _digest(line: str) -> str | None:
    value = line.split()[0] if line.split() else ""
    return None if value in ("", _EMPTY_SHA256) else value


class TlsRequest(FactBase[dict[str, str] | None]):
    """Returns a certificate signing request (PEM) and its public key's SHA-256, or None.

    None also when the file is no valid request.

    .. code:: python

        {
            "key_sha256": "2faa74c93ce8...",
            "pem": "-----BEGIN CERTIFICATE REQUEST-----\\n...",
        }
    """

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        digest = _key_digest(f"openssl req -in {quoted} -noout -pubkey")
        return f"if [ -f {quoted} ]; then {digest}; cat {quoted}; fi"

    def requires_command(self, path: str) -> str:
        return "openssl"

    def process(self, output: list[str]) -> dict[str, str] | None:
        if not output:
            return None
        digest, pem = _digest(output[0]), _pem(output[1:], "CERTIFICATE REQUEST")
        if digest is None or pem is None:
            return None
        return {"key_sha256": digest, "pem": pem}


class TlsCertificate(FactBase[dict[str, Any] | None]):
    """Returns a certificate (PEM), its public key's SHA-256, its subjectAltName and whether
    it is valid: signed by ``ca`` and not expiring within ``valid_days``. None if absent.

    .. code:: python

        {
            "key_sha256": "2faa74c93ce8...",
            "san": "DNS:app-1,IPAddress:10.77.0.21",
            "valid": True,
            "pem": "-----BEGIN CERTIFICATE-----\\n...",
        }
    """

    def command(self, path: str, ca: str, valid_days: int) -> str:
        cert, ca_file = shlex.quote(path), shlex.quote(ca)
        seconds = int(valid_days) * 86400
        digest = _key_digest(f"openssl x509 -in {cert} -noout -pubkey")
        san = (
            f"openssl x509 -in {cert} -noout -ext subjectAltName 2>/dev/null "
            "| tail -n +2 | tr -d ' \\n'; echo"
        )
        valid = (
            f"if openssl verify -CAfile {ca_file} {cert} >/dev/null 2>&1 && "
            f"openssl x509 -in {cert} -noout -checkend {seconds} >/dev/null 2>&1; "
            "then echo valid; else echo invalid; fi"
        )
        return f"if [ -f {cert} ]; then {digest}; {san}; {valid}; cat {cert}; fi"

    def requires_command(self, path: str, ca: str, valid_days: int) -> str:
        return "openssl"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        if len(output) < 3:
            return None
        digest, pem = _digest(output[0]), _pem(output[3:], "CERTIFICATE")
        if digest is None or pem is None:
            return None
        return {
            "key_sha256": digest,
            "san": output[1].strip(),
            "valid": output[2].strip() == "valid",
            "pem": pem,
        }


def _pem(lines: list[str], label: str) -> str | None:
    """Return the one PEM block of ``label`` in ``lines``, or None."""
    text = "".join(f"{line.strip()}\n" for line in lines if line.strip())
    begin, end = f"-----BEGIN {label}-----\n", f"-----END {label}-----\n"
    if not text.startswith(begin) or not text.endswith(end) or text.count(begin) != 1:
        return None
    return text
