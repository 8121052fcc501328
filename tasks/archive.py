"""Stage 1, archive: the source tree at one commit, exactly, in package/.

Key: the commit the ref resolves to (and the subtree, when `source` is a folder inside a repo).
The record in .durango/archive.json also holds a stat fingerprint of package/, so an edited,
added or deleted file there makes the stage stale, and a content key that embed builds on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import git

from tasks.content import tree_signature
from tasks.errors import SourceError
from tasks.pipeline import Pipeline, TaskDict, command_task

RECORD = "archive"
_CHUNK = 1 << 20


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


def why(pipe: Pipeline) -> str | None:
    source = resolve_source(pipe)
    warn_if_dirty(pipe, source)
    record = pipe.read_record(RECORD)
    package = pipe.settings.package_dir
    if record is None:
        return "package/ was never archived (or an archive was interrupted)"
    if (record["repo"], record["subdir"]) != (str(source.repo_dir), source.subdir):
        return f"source changed to {source.repo_dir}/{source.subdir}"
    if record["commit"] != source.commit:
        return f"{pipe.settings.ref} moved: {record['commit'][:12]} -> {source.commit[:12]}"
    if not package.is_dir():
        return "package/ is missing"
    if tree_signature(package) != record["signature"]:
        return "package/ was modified since it was archived"
    return None


def _safe_path(root: Path, name: str) -> Path:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise SourceError(f"git archive produced an unsafe path: {name}")
    return root.joinpath(*rel.parts)


def _extract(stream: IO[bytes], package: Path) -> tuple[str, int, int]:
    """Write the tar stream into package/, hashing as it goes: (content key, files, bytes)."""
    content = hashlib.sha256()
    files = total = 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.name in ("pax_global_header",) or member.type == tarfile.XGLTYPE:
                continue
            target = _safe_path(package, member.name)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if member.issym():
                os.symlink(member.linkname, target)
                content.update(f"{member.name}\0link\0{member.linkname}\n".encode())
            elif member.isfile():
                data = tar.extractfile(member)
                assert data is not None
                digest = hashlib.sha256()
                with target.open("wb") as out:
                    while chunk := data.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                executable = bool(member.mode & 0o111)
                target.chmod(0o755 if executable else 0o644)
                content.update(f"{member.name}\0{executable}\0{digest.hexdigest()}\n".encode())
                total += member.size
            else:
                continue
            files += 1
    return content.hexdigest(), files, total


def run(pipe: Pipeline) -> None:
    started = time.monotonic()
    source = resolve_source(pipe)
    package = pipe.settings.package_dir
    pipe.drop_record(RECORD)  # from here until the end, package/ does not look complete
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    proc = subprocess.Popen(
        ["git", "archive", "--format=tar", source.treeish],
        cwd=source.repo_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        content_key, files, size = _extract(proc.stdout, package)
    finally:
        proc.stdout.close()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = proc.wait()
    if code != 0:
        raise SourceError(f"git archive {source.treeish} failed: {stderr.strip()}")
    # File times inside the binary: when the shipped tree last changed (stable across commits
    # that touch only other folders of the repository).
    epoch = source.repo.git.log("-1", "--format=%ct", source.commit, "--", source.subdir or ".")
    pipe.write_record(
        RECORD,
        {
            "repo": str(source.repo_dir),
            "subdir": source.subdir,
            "commit": source.commit,
            "content_key": content_key,
            "source_date_epoch": epoch.strip() or "0",
            "signature": tree_signature(package),
        },
    )
    check_app(pipe)
    where = f"{source.repo_dir.name}/{source.subdir}" if source.subdir else source.repo_dir.name
    print(
        f"archive: {files} files ({size / 1e6:.1f} MB) of {where} at {source.commit[:12]} "
        f"into package/ in {time.monotonic() - started:.1f}s"
    )


def archived(pipe: Pipeline) -> dict[str, str]:
    """The record of the last complete archive: content key, commit, source date."""
    record = pipe.read_record(RECORD)
    if record is None:
        raise SourceError("package/ has not been archived; run `doit archive`")
    return record


def content_key(pipe: Pipeline) -> str:
    """Fingerprint of package/ contents, as recorded by the last complete archive."""
    return str(archived(pipe)["content_key"])


def check_app(pipe: Pipeline) -> None:
    """What the settings expect of the app, checked as soon as it is archived, not after a build."""
    docroot = pipe.settings.docroot
    if not (pipe.settings.package_dir / docroot).is_dir():
        raise SourceError(
            f"docroot {docroot!r} is not a folder of the app at {pipe.settings.ref}; set docroot "
            "to the folder the web server serves (for example webroot, public or .)"
        )


DOC = "git archive of the source at the ref into package/ (key: the commit)"


def task(pipe: Pipeline) -> TaskDict:
    return command_task(pipe, DOC, lambda: run(pipe), lambda: why(pipe))
