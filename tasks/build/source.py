"""The app's source: the repository, the folder of it we ship, and the commit a ref names.

Resolved once per run, with one clear error for each way it can fail; the archive stage ships it
and the image stages label their images with it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import git

from tasks.core.errors import SourceError
from tasks.core.pipeline import Pipeline


@dataclass(frozen=True)
class Source:
    """The source repository, the folder of it we ship, and the commit we ship it at."""

    repo: git.Repo
    repo_dir: Path
    subdir: str  # "" for the whole repository
    commit: str

    @property
    def treeish(self) -> str:
        return f"{self.commit}:{self.subdir}" if self.subdir else self.commit

    @property
    def url(self) -> str:
        """Where the source comes from, for image labels (read only when an image is built)."""
        return next((r.url for r in self.repo.remotes if r.name == "origin"), str(self.repo_dir))


def resolve_source(pipe: Pipeline) -> Source:
    """Find the repository and resolve the ref, with one clear error for each way it can fail."""

    def resolve() -> Source:
        settings = pipe.settings
        path = settings.source
        if not path.exists():
            raise SourceError(
                f"source {path} does not exist (set it with `doit source=PATH`, "
                "DURANGO_SOURCE or [tool.durango] source)"
            )
        try:
            repo = git.Repo(path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise SourceError(f"source {path} is not inside a git repository") from None
        if repo.working_tree_dir is None:
            raise SourceError(f"source {path} is a bare repository; point source at a checkout")
        repo_dir = Path(repo.working_tree_dir).resolve()
        subdir = path.resolve().relative_to(repo_dir).as_posix()
        try:
            commit = repo.git.rev_parse("--verify", "--quiet", f"{settings.ref}^{{commit}}")
        except git.GitCommandError:
            raise SourceError(
                f"ref {settings.ref!r} is not a commit in {repo_dir}"
                + (" (the repository has no commits yet)" if not repo.head.is_valid() else "")
            ) from None
        return Source(repo, repo_dir, "" if subdir == "." else subdir, commit)

    source: Source = pipe.once("source", resolve)
    return source


def warn_if_dirty(pipe: Pipeline, source: Source) -> None:
    """Uncommitted changes are not built: say so, once per run."""
    if pipe.memo.get("dirty-warned"):
        return
    pipe.memo["dirty-warned"] = True
    status = source.repo.git.status("--porcelain", "--", source.subdir or ".")
    if status.strip():
        where = source.repo_dir / source.subdir if source.subdir else source.repo_dir
        print(
            f"durango: warning: {where} has uncommitted changes; only committed content "
            f"({source.commit[:12]}) is built",
            file=sys.stderr,
        )


def image_labels(pipe: Pipeline) -> dict[str, str]:
    """OCI labels naming the source the images were built from."""
    source = resolve_source(pipe)
    return {
        "org.opencontainers.image.revision": source.commit,
        "org.opencontainers.image.source": source.url,
    }


# --- reading trees and blobs straight from git (the archive stage's incremental update) ----------


@dataclass(frozen=True)
class Change:
    """One path that differs between two trees, as `git diff-tree --raw` reports it."""

    status: str  # A, M, T (type changed) or D
    mode: str  # the new mode: 100644, 100755, 120000 (symlink), 160000 (submodule)
    blob: str  # the new object (all zeros for D)
    path: str  # relative to the shipped folder


def tree_id(source: Source, commit: str) -> str:
    """The git tree of the shipped folder at a commit: its content, modes included, exactly."""
    treeish = f"{commit}:{source.subdir}" if source.subdir else f"{commit}^{{tree}}"
    try:
        return str(source.repo.git.rev_parse("--verify", "--quiet", treeish))
    except git.GitCommandError:
        where = source.subdir or "the repository"
        raise SourceError(f"{where} does not exist at {commit[:12]}") from None


def changes(source: Source, old_tree: str, new_tree: str) -> list[Change]:
    """What to delete and write to turn old_tree into new_tree (no rename detection)."""
    out = source.repo.git.diff_tree("-r", "-z", "--raw", "--no-renames", old_tree, new_tree)
    fields = out.split("\0")
    found = []
    for header, path in zip(fields[0::2], fields[1::2], strict=False):
        if not header:
            continue
        _, new_mode, _, blob, status = header.lstrip(":").split(" ")
        found.append(Change(status[0], new_mode, blob, path))
    return found


def has_export_attributes(source: Source, commit: str) -> bool:
    """Whether `git archive` would change the tree (export-ignore / export-subst): then the
    archive cannot be the tree's blobs, and the stage rewrites package/ whole."""
    info = Path(source.repo.git_dir) / "info" / "attributes"
    if info.is_file() and "export-" in info.read_text(errors="replace"):
        return True
    listed = source.repo.git.ls_tree("-r", "-z", "--name-only", commit, "--", source.subdir or ".")
    for name in listed.split("\0"):
        is_attributes = name == ".gitattributes" or name.endswith("/.gitattributes")
        if is_attributes and "export-" in source.repo.git.show(f"{commit}:{name}"):
            return True
    return False


class BlobReader:
    """One `git cat-file --batch` for many blobs: the content of each, in order."""

    def __init__(self, source: Source) -> None:
        self._proc = subprocess.Popen(
            ["git", "cat-file", "--batch"],
            cwd=source.repo_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def chunks(self, blob: str) -> Iterator[bytes]:
        """The blob's content in chunks of at most 1 MiB (memory stays flat)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{blob}\n".encode())
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().decode().split()
        if len(header) != 3 or header[1] != "blob":
            raise SourceError(f"git cat-file cannot read {blob}: {' '.join(header)}")
        left = int(header[2])
        while left:
            chunk = self._proc.stdout.read(min(left, 1 << 20))
            if not chunk:
                raise SourceError(f"git cat-file stopped in the middle of {blob}")
            left -= len(chunk)
            yield chunk
        self._proc.stdout.read(1)  # the newline after each object

    def read(self, blob: str) -> bytes:
        return b"".join(self.chunks(blob))

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait()
