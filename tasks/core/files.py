"""Writing and hashing files safely: one sha256 helper, one atomic write, one fsync of a folder.

Readers never see a half-written file (temp file beside it, then rename), and what is hashed is
read in 1 MiB chunks, so memory stays flat whatever the size.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The sha256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_hashing(
    chunks: Iterable[bytes],
    out: IO[bytes],
    progress: Callable[[int], None] | None = None,
    fsync: bool = True,
) -> tuple[str, int]:
    """Write chunks to `out`, hashing as they pass, then flush (and fsync): (sha256, size).
    `progress` hears the bytes written so far, at most once a second."""
    digest = hashlib.sha256()
    size = 0
    last = time.monotonic()
    for chunk in chunks:
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        if progress is not None and time.monotonic() - last > 1.0:
            progress(size)
            last = time.monotonic()
    out.flush()
    if fsync:
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Every file and folder below `path`, and `path` itself, on disk (before anything older is
    removed in its favour)."""
    for current, _dirs, names in os.walk(path):
        for name in names:
            fd = os.open(os.path.join(current, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(current))


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write via a temp file and rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            if mode is not None:
                os.chmod(tmp, mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    atomic_write_bytes(path, text.encode(), mode)
