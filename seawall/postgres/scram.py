"""SCRAM-SHA-256 verifiers, so role passwords reach the database only as verifiers.

PostgreSQL stores a role's password as a verifier and accepts one in
``CREATE/ALTER ROLE ... PASSWORD``: the deploy computes it on the controller,
and checks a stored verifier against the password without changing it.
"""

import base64
import hashlib
import hmac
import os

ITERATIONS = 4096


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """Return the SCRAM-SHA-256 verifier PostgreSQL would store for ``password``."""
    salt = os.urandom(16) if salt is None else salt
    stored_key, server_key = _keys(password, salt, iterations)
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def matches(stored: str | None, password: str) -> bool:
    """Whether ``stored`` (a rolpassword value) is a SCRAM verifier of ``password``."""
    if not stored or not stored.startswith("SCRAM-SHA-256$"):
        return False
    try:
        params, keys = stored[len("SCRAM-SHA-256$") :].split("$", 1)
        iterations_text, salt_text = params.split(":", 1)
        stored_key, server_key = (base64.b64decode(part) for part in keys.split(":", 1))
        salt, iterations = base64.b64decode(salt_text), int(iterations_text)
    except ValueError:
        return False
    expected_stored, expected_server = _keys(password, salt, iterations)
    return hmac.compare_digest(expected_stored, stored_key) and hmac.compare_digest(
        expected_server, server_key
    )
