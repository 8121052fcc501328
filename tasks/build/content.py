"""What a build can read, and its fingerprint.

A stage's key is computed from exactly the files it sends to the engine, so a change to any of
them (and to nothing else) makes the stage stale. Hashes are remembered by file stat
(core/hashcache.py), so a no-op run reads no file contents.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tasks.core.hashcache import HashCache
from tasks.engine.context import sent_paths
from tasks.formats import dockerfile as dockerfile_reader

# Fixed metadata in context tars: identical inputs give identical bytes, so BuildKit's cache hits.
_TAR_MTIME = 946684800  # 2000-01-01


@dataclass(frozen=True)
class ContextFile:
    """One file or symlink of a build context: where it is on disk (or its bytes, for a file the
    pipeline writes itself), where it goes in the tar."""

    arcname: str
    path: Path
    data: bytes | None = None


def context_files(context_dir: Path, dockerfile: str) -> list[ContextFile]:
    """Files of a context directory that the engine would receive, honouring .dockerignore."""
    kept = sent_paths(context_dir, dockerfile)
    files = []
    for rel in kept:
        path = context_dir / rel
        if path.is_symlink() or path.is_file():
            files.append(ContextFile(rel, path))
    return sorted(files, key=lambda f: f.arcname)


def read_by(dockerfile: str, files: list[ContextFile]) -> list[ContextFile]:
    """The context files a Dockerfile can read (its own file name is always kept)."""
    sources = dockerfile_reader.copied_sources(dockerfile)
    if sources is None or any(s in (".", "./", "*") for s in sources):
        return files
    wanted = [s.removeprefix("./") for s in sources]
    return [
        f
        for f in files
        if f.arcname.endswith("Dockerfile")
        or any(
            f.arcname == s or f.arcname.startswith(s + "/") or fnmatch.fnmatch(f.arcname, s)
            for s in wanted
        )
    ]


def tree_files(directory: Path, prefix: str) -> Iterator[ContextFile]:
    """Every file and symlink below `directory`, in a stable order, placed under `prefix/`."""
    for current, dirs, names in os.walk(directory):
        dirs.sort()
        rel_dir = os.path.relpath(current, directory)
        for name in sorted(names):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            yield ContextFile(f"{prefix}/{rel}", Path(current, name))


def file_digests(files: Iterable[ContextFile], hashes: HashCache) -> dict[str, str]:
    """arcname -> content fingerprint (executable bit and symlink targets count as content)."""
    result = {}
    for f in files:
        if f.data is not None:
            result[f.arcname] = "-:" + hashlib.sha256(f.data).hexdigest()
        elif f.path.is_symlink():
            result[f.arcname] = "link:" + os.readlink(f.path)
        else:
            mode = "x" if os.access(f.path, os.X_OK) else "-"
            result[f.arcname] = f"{mode}:{hashes.sha256(f.path)}"
    return result


def tree_signature(directory: Path) -> str:
    """Cheap fingerprint of a tree from stat alone: detects edits, additions and removals.

    Runs on every no-op build over the whole app (tens of thousands of files): scandir, no
    Path objects, one hash update.
    """
    entries = []
    skip = len(str(directory)) + 1  # record paths relative to the tree: the project may move
    pending = [str(directory)]
    while pending:
        with os.scandir(pending.pop()) as scan:
            for entry in scan:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                st = entry.stat(follow_symlinks=False)
                entries.append(
                    f"{entry.path[skip:]}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
                )
    entries.sort()
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def write_context_tar(out: IO[bytes], files: Iterable[ContextFile]) -> None:
    """Stream a deterministic tar of `files` (owner root, fixed mtime, normalised modes)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for f in files:
            info = tarfile.TarInfo(f.arcname)
            info.mtime = _TAR_MTIME
            if f.data is not None:
                info.size, info.mode = len(f.data), 0o644
                tar.addfile(info, io.BytesIO(f.data))
                continue
            st = f.path.lstat()
            if stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(f.path)
                info.mode = 0o777
                tar.addfile(info)
                continue
            info.size = st.st_size
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
            with f.path.open("rb") as fh:
                tar.addfile(info, fh)
