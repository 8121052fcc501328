"""Byte streams from the engine read lazily: memory stays flat whatever the size."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker
    import requests
    from _typeshed import WriteableBuffer


@contextlib.contextmanager
def container_archive(
    client: docker.DockerClient, container_id: str, path: str
) -> Iterator[requests.Response]:
    """The engine's tar of a container path as a streamed response, closed on leaving, also on an
    interrupt. The engine holds the container's lock until that stream is closed (moby
    daemon/archive_unix.go, containerArchivePath: "Wait to unlock the container until the archive
    is fully read"), so a stream left open makes removing the container hang. The SDK's
    get_archive gives no handle to close, hence the raw request through the SDK's own session."""
    api = client.api
    response = api.get(
        f"{api.base_url}/v{api.api_version}/containers/{container_id}/archive",
        params={"path": path},
        stream=True,
    )
    with contextlib.closing(response):
        yield response


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
