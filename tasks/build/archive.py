"""Stage 1, archive: the source tree at one commit, exactly, in package/.

Key: the commit the ref resolves to (and the subtree, when `source` is a folder inside a repo).
The record in .durango/archive.json also holds a stat fingerprint of package/, so an edited,
added or deleted file there makes the stage stale, and a content key that the later stages
build on: the git tree of the shipped folder (its content and modes, exactly).
A new commit rewrites only the paths git says changed, when package/ is exactly the last
archive; otherwise (first run, package/ edited, export-ignore/export-subst attributes) the
whole tree comes from `git archive`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import IO

from tasks.build.content import tree_signature
from tasks.build.source import (
    BlobReader,
    Change,
    Source,
    changes,
    has_export_attributes,
    resolve_source,
    tree_id,
    warn_if_dirty,
)
from tasks.core.errors import SourceError
from tasks.core.files import CHUNK, copy_hashing
from tasks.core.pipeline import Pipeline, TaskDict, command_task

RECORD = "archive"


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
                with target.open("wb") as out:
                    sha, _ = copy_hashing(
                        iter(functools.partial(data.read, CHUNK), b""), out, fsync=False
                    )
                executable = bool(member.mode & 0o111)
                target.chmod(0o755 if executable else 0o644)
                content.update(f"{member.name}\0{executable}\0{sha}\n".encode())
                total += member.size
            else:
                continue
            files += 1
    return content.hexdigest(), files, total


def _full(pipe: Pipeline, source: Source, package: Path) -> tuple[str, str]:
    """package/ rewritten whole from `git archive` (export attributes honoured): (content key,
    what happened)."""
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
        key, files, size = _extract(proc.stdout, package)
    finally:
        proc.stdout.close()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = proc.wait()
    if code != 0:
        raise SourceError(f"git archive {source.treeish} failed: {stderr.strip()}")
    return f"archive:{key}", f"{files} files ({size / 1e6:.1f} MB)"


def _write_blob(blobs: BlobReader, change: Change, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    if change.mode == "120000":
        os.symlink(blobs.read(change.blob).decode(), target)
    elif change.mode == "160000":  # a submodule: git archive ships an empty folder
        target.mkdir()
    else:
        with target.open("wb") as out:
            for chunk in blobs.chunks(change.blob):
                out.write(chunk)
        target.chmod(0o755 if change.mode == "100755" else 0o644)


def _incremental(source: Source, package: Path, old_tree: str, new_tree: str) -> str:
    """Only the paths git says changed are deleted or rewritten in package/: what happened."""
    found = changes(source, old_tree, new_tree)
    deleted = [c for c in found if c.status == "D"]
    for change in deleted:
        target = _safe_path(package, change.path)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        parent = target.parent
        while parent != package and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    blobs = BlobReader(source)
    try:
        for change in found:
            if change.status != "D":
                _write_blob(blobs, change, _safe_path(package, change.path))
    finally:
        blobs.close()
    return f"{len(found) - len(deleted)} paths written, {len(deleted)} removed (git diff)"


def run(pipe: Pipeline) -> None:
    """package/ brought to the commit: incrementally when it is exactly the last archive and git
    can say what changed, else rewritten whole. The record is dropped first, so an interrupted
    run leaves package/ stale, never taken for complete."""
    started = time.monotonic()
    source = resolve_source(pipe)
    package = pipe.settings.package_dir
    previous = pipe.read_record(RECORD)
    pipe.drop_record(RECORD)  # from here until the end, package/ does not look complete
    new_tree = tree_id(source, source.commit)
    incremental = (
        previous is not None
        and (previous.get("repo"), previous.get("subdir")) == (str(source.repo_dir), source.subdir)
        and previous.get("content_key", "").startswith("tree:")
        and package.is_dir()
        and tree_signature(package) == previous.get("signature")
        and not has_export_attributes(source, source.commit)
    )
    if incremental and previous is not None:
        content_key = f"tree:{new_tree}"
        done = _incremental(source, package, previous["content_key"][5:], new_tree)
    elif has_export_attributes(source, source.commit):
        content_key, done = _full(pipe, source, package)
    else:
        _, done = _full(pipe, source, package)
        content_key = f"tree:{new_tree}"
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
        f"archive: {where} at {source.commit[:12]} into package/: {done} in "
        f"{time.monotonic() - started:.1f}s"
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
