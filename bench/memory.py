"""A container's memory from its cgroup, as the kernel counts it: the peak it records (cgroup v1
memory.max_usage_in_bytes, reset before a measurement; v2 memory.peak) and, sampled every 0.1 s,
usage and resident memory (anonymous + mapped files: what the processes' RSS adds up to, shared
pages once). Usage also counts the page cache of files the container read (the extracted app),
which the kernel gives back under pressure; resident memory does not."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOTS = ("/sys/fs/cgroup/memory/docker/{}", "/sys/fs/cgroup/system.slice/docker-{}.scope",
         "/sys/fs/cgroup/docker/{}")  # fmt: skip


@dataclass
class Peak:
    """Megabytes: the kernel's peak usage, and the highest sampled usage and resident memory."""

    usage: float = 0.0
    sampled_usage: float = 0.0
    resident: float = 0.0


def cgroup(container_id: str) -> Path:
    for root in ROOTS:
        path = Path(root.format(container_id))
        if path.is_dir():
            return path
    raise SystemExit(f"no memory cgroup found for container {container_id[:12]}")


def _stat(folder: Path) -> dict[str, int]:
    lines = (folder / "memory.stat").read_text().splitlines()
    return {name: int(value) for name, value in (line.split() for line in lines)}


def _sample(folder: Path) -> tuple[int, int]:
    """(usage, resident) in bytes now."""
    stat = _stat(folder)
    if (folder / "memory.usage_in_bytes").is_file():  # v1
        usage = int((folder / "memory.usage_in_bytes").read_text())
        return usage, stat.get("total_rss", 0) + stat.get("total_mapped_file", 0)
    usage = int((folder / "memory.current").read_text())
    return usage, stat.get("anon", 0) + stat.get("file_mapped", 0)


@contextmanager
def peak(container_id: str) -> Iterator[Peak]:
    """The container's memory peaks while the block runs."""
    folder = cgroup(container_id)
    v1 = folder / "memory.max_usage_in_bytes"
    if v1.is_file():
        v1.write_text("0")  # the kernel's peak from now on
    found = Peak()
    stop = threading.Event()
    highest = [0, 0]

    def sampler() -> None:
        while not stop.is_set():
            usage, resident = _sample(folder)
            highest[0], highest[1] = max(highest[0], usage), max(highest[1], resident)
            stop.wait(0.1)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join()
        kernel = v1 if v1.is_file() else folder / "memory.peak"
        found.usage = int(kernel.read_text()) / 1e6 if kernel.is_file() else 0.0
        found.sampled_usage, found.resident = highest[0] / 1e6, highest[1] / 1e6
