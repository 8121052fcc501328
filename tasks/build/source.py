"""The app's source: the repository, the folder of it we ship, and the commit a ref names.

Resolved once per run, with one clear error for each way it can fail; the archive stage ships it
and the image stages label their images with it.
"""

from __future__ import annotations

import sys
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
