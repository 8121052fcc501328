"""sha256 of files, remembered by stat, so a no-op run reads no file contents."""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path

from tasks.core.files import atomic_write_text, sha256_file


class HashCache:
    """sha256 of files, reused while (size, mtime, ctime, inode) are unchanged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, list[int | str]] | None = None  # stat stamp + sha256
        self._dirty = False
        atexit.register(self.save)

    def _load(self) -> dict[str, list[int | str]]:
        if self._entries is None:
            try:
                self._entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    @staticmethod
    def _stamp(st: os.stat_result) -> list[int]:
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        entry = self._load().get(key)
        if entry and entry[:4] == self._stamp(st):
            return str(entry[4])
        digest = sha256_file(path)
        self.remember(path, digest)
        return digest

    def remember(self, path: Path, sha256: str) -> None:
        """Record a hash computed elsewhere (e.g. while streaming the file in)."""
        self._load()[str(path.resolve())] = [*self._stamp(path.stat()), sha256]
        self._dirty = True

    def forget_missing(self) -> int:
        """Drop the entries of files that no longer exist; how many."""
        entries = self._load()
        gone = [path for path in entries if not os.path.exists(path)]
        for path in gone:
            del entries[path]
        self._dirty = self._dirty or bool(gone)
        return len(gone)

    def save(self) -> None:
        if self._dirty and self._entries is not None:
            atomic_write_text(self.path, json.dumps(self._entries))
            self._dirty = False
