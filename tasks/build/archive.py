"""Stage 1, archive: the source tree at one commit, exactly, in package/.

Key: the commit the ref resolves to (and the subtree, when `source` is a folder inside a repo).
The record in .durango/archive.json also holds a stat fingerprint of package/, so an edited,
added or deleted file there makes the stage stale, and a content key that embed builds on.
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
from tasks.build.source import resolve_source, warn_if_dirty
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
