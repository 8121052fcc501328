"""A command in a running container with its stdin and stdout as streams, through the engine's
exec socket (`exec_create(stdin=True)` + `exec_start(socket=True)`, demultiplexed here): a dump
goes from `pg_dump` straight into a file on the host, a file straight into `pg_restore`, and
neither is ever staged in the container or held whole in memory.

The command is tethered to this process. It runs under a small shell (TETHER) in a process group
of its own: it reads exactly the input's byte count from stdin, and once that is read, the rest
of stdin is watched; when this process dies the engine closes the exec's stdin, the watcher sees
EOF and stops the whole group. So no `pg_dump`, `psql` or `pg_restore` outlives the doit that
started it, whether it was reading, writing or working.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, cast

import docker

from tasks.core.errors import EngineError
from tasks.core.files import CHUNK
from tasks.core.ports import Streamed

# $1: bytes of input, then the command. A FIFO per run (mktemp) carries the input; fd 3 keeps
# the exec's stdin for the watcher (a background job's stdin would be /dev/null).
TETHER = r"""
exec 3<&0
n=$1; shift
fifo=$(mktemp -u "${TMPDIR:-/tmp}/durango-in.XXXXXXXX") && mkfifo -m 600 "$fifo" || exit 125
setsid "$@" <"$fifo" & child=$!
if [ "$n" -gt 0 ]; then head -c "$n" <&3 >"$fifo"; else : >"$fifo"; fi
rm -f "$fifo"
(cat <&3 >/dev/null 2>&1; kill -TERM -"$child" 2>/dev/null) >/dev/null 2>&1 &
exec 3<&-
wait "$child"
"""
STDOUT, STDERR = 1, 2
KEEP_ERR = 64 * 1024


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return data
        data += chunk
    return data


def _feed(sock: socket.socket, source: Path | bytes | None, failed: list[BaseException]) -> None:
    """Write the input into the exec's stdin; the socket stays open (the tether) until the
    command has ended and the caller closes it."""
    try:
        if isinstance(source, bytes):
            sock.sendall(source)
        elif source is not None:
            with source.open("rb") as data:
                while chunk := data.read(CHUNK):
                    sock.sendall(chunk)
    except OSError as exc:  # the command stopped reading (it ended early, or failed)
        failed.append(exc)


def run(
    client: docker.DockerClient,
    container_id: str,
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    user: str = "",
    stdin: Path | bytes | None = None,
    stdout: Path | None = None,
) -> Streamed:
    """Run `cmd` tethered, feeding `stdin` (a file or bytes) and writing its stdout into the
    file `stdout` (flushed and fsynced), or returning it when `stdout` is None."""
    size_in = len(stdin) if isinstance(stdin, bytes) else stdin.stat().st_size if stdin else 0
    api = client.api
    created = api.exec_create(
        container_id,
        ["sh", "-c", TETHER, "sh", str(size_in), *cmd],
        stdin=True,
        stdout=True,
        stderr=True,
        environment=dict(env or {}),
        user=user,
    )
    exec_id = created["Id"]
    raw = api.exec_start(exec_id, socket=True)
    sock = cast(socket.socket, getattr(raw, "_sock", raw))
    failed: list[BaseException] = []
    feeder = threading.Thread(target=_feed, args=(sock, stdin, failed), daemon=True)
    feeder.start()
    digest = hashlib.sha256()
    written = 0
    kept_out = bytearray()
    kept_err = bytearray()
    sink: IO[bytes] | None = stdout.open("wb") if stdout is not None else None
    try:
        while True:
            header = _recv_exact(sock, 8)
            if len(header) < 8:
                break
            kind, length = header[0], struct.unpack(">I", header[4:])[0]
            remaining = length
            while remaining:
                chunk = sock.recv(min(remaining, CHUNK))
                if not chunk:
                    raise EngineError(f"`{cmd[0]}`: the engine closed the stream part-way")
                remaining -= len(chunk)
                if kind == STDOUT:
                    if sink is not None:
                        sink.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                    else:
                        kept_out += chunk
                elif kind == STDERR:
                    kept_err += chunk
                    del kept_err[:-KEEP_ERR]
        if sink is not None:
            sink.flush()
            os.fsync(sink.fileno())
    finally:
        if sink is not None:
            sink.close()
        sock.close()
        raw.close()
    feeder.join(timeout=5)
    code = api.exec_inspect(exec_id).get("ExitCode")
    return Streamed(
        code if isinstance(code, int) else -1,
        bytes(kept_out),
        digest.hexdigest(),
        written,
        kept_err.decode(errors="replace"),
    )
