"""The one lock helper: an exclusive flock on a file, held for a block or for the process.

A second holder either waits and says so (who holds it, read from the file) or, with
`wait=False`, gets a LockError naming the holder. The lock dies with its process: a killed
holder never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tasks.core.errors import LockError


def acquire(path: Path, what: str, wait: bool = True, holder: str = "") -> IO[str]:
    """Take the lock at `path`; returns the open handle, which holds the lock until closed.
    `what` says who is in the way ("another doit is running in /x"); `holder` is written into
    the file for the next one to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - the caller holds it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        current = handle.read().strip() or "another process"
        if not wait:
            handle.close()
            raise LockError(f"{what} ({current}); try again when it has finished") from None
        print(
            f"durango: {what} ({current}); waiting for it to finish (Ctrl-C to give up)",
            file=sys.stderr,
            flush=True,
        )
        fcntl.flock(handle, fcntl.LOCK_EX)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{holder or 'pid'} {os.getpid()}\n")
    handle.flush()
    return handle


@contextlib.contextmanager
def held(path: Path, what: str, wait: bool = True, holder: str = "") -> Iterator[None]:
    """`acquire` for the length of a block."""
    handle = acquire(path, what, wait, holder)
    try:
        yield
    finally:
        handle.close()
