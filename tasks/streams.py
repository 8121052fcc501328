"""Byte streams from the engine, handled in 1 MiB chunks: memory stays flat whatever the size."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK = 1 << 20


class ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks, so tarfile can read a stream lazily."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        view = memoryview(buffer).cast("B")
        size = min(len(view), len(self._pending))
        view[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def write_stream(
    chunks: Iterable[bytes], out: IO[bytes], progress: Callable[[int], None] | None = None
) -> tuple[str, int]:
    """Write chunks to `out`, hashing as they pass, and fsync: (sha256, size). Memory stays flat."""
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
    os.fsync(out.fileno())
    return digest.hexdigest(), size
