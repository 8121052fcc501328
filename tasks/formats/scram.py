"""SCRAM-SHA-256 password verifiers as PostgreSQL stores them (RFC 5802, RFC 7677).

A tenant's role is created with the verifier, never the password: the server stores what it
would have computed itself, and neither its log (`log_statement`), a failing statement, nor
`pg_stat_activity` can show the password. Format: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:
<ServerKey>` (base64), as in pg_authid.rolpassword.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

ITERATIONS = 4096  # PostgreSQL's scram_iterations default
SALT_BYTES = 16


def keys(password: str, salt: bytes, iterations: int = ITERATIONS) -> tuple[bytes, bytes, bytes]:
    """(ClientKey, StoredKey, ServerKey) of a password. PostgreSQL applies SASLprep to the
    password first; for ASCII (what `doit tenant-add` generates) that changes nothing."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return client_key, stored_key, server_key


def verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The verifier PostgreSQL accepts in `CREATE ROLE … PASSWORD '<verifier>'`."""
    if not password.isascii():
        raise ValueError("only ASCII passwords are turned into verifiers here (no SASLprep)")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    _, stored_key, server_key = keys(password, salt, iterations)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
