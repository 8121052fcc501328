"""backup / backups: consistent database dumps plus volume archives, with checksums.

One implementation for the doit tasks and for `backup_volumes.sh` (tasks/cli/backup_volumes.py).
A backup is a folder `<backup_dir>/<UTC time>/` (`pre-restore-<UTC time>/` for the snapshot a
restore takes first), private to its owner from the first byte (umask 077):
  database.dump       `pg_dump -Fc` of the running database (bundled or external): consistent,
                      unlike a tar of a live data directory
  volumes/<name>.tar  every named volume of the bundle except the raw PostgreSQL data and the
                      app cache (derived from the binary)
  manifest.json       volumes, sizes, sha256 of every file, image IDs, source commit, times
It is written as `.partial-<name>/` and renamed when complete; only then does `latest` move.
One backup at a time per folder (a lock): a second one waits and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TypedDict, cast

from tasks.core import locks
from tasks.core.errors import BackupError
from tasks.core.files import atomic_write_text, sha256_file
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.core.ports import Service
from tasks.deploy.database import APP, DB, database

TOOL = "durango-backup/1"
# Never archived nor restored: the raw database files (the dump is their consistent copy) and
# the app cache (the binary extracts it again).
NOT_ARCHIVED = {"db-data", "app-cache"}
PRE_RESTORE = "pre-restore-"


class FileEntry(TypedDict):
    sha256: str
    size: int


class VolumeEntry(TypedDict):
    name: str  # the engine's volume name when it was backed up
    file: str  # its archive, relative to the backup folder


class Manifest(TypedDict):
    """manifest.json of a backup."""

    tool: str
    project: str
    kind: str
    created: str
    database: dict[str, bool | str]  # bundled, dump_started
    volumes: dict[str, VolumeEntry]
    images: dict[str, str]
    source_commit: str | None
    files: dict[str, FileEntry]


def backup(pipe: Pipeline, kind: str = "") -> Path:
    """Take a backup (kind "" ) or a pre-restore snapshot (kind PRE_RESTORE); its folder."""
    settings, containers = pipe.settings, pipe.containers
    project = settings.compose_project
    app, db = containers.service(project, APP), containers.service(project, DB)
    stopped_app = next((s for s in containers.services(project) if s.service == APP), None)
    source = app or db or stopped_app
    if source is None or (db is None and stopped_app is None):
        raise BackupError(
            f"nothing of compose project {project} is running; start it first (doit up) so "
            "that the database can be dumped consistently"
        )
    root = settings.backup_dir
    saved_umask = os.umask(0o077)  # every file and folder private from its first byte
    try:
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        with locks.held(root / ".lock", f"another backup is writing into {root}"):
            return _write_backup(pipe, root, kind, db is not None, source)
    finally:
        os.umask(saved_umask)


def _write_backup(pipe: Pipeline, root: Path, kind: str, bundled: bool, source: Service) -> Path:
    settings, containers = pipe.settings, pipe.containers
    for stale in root.glob(".partial-*"):  # interrupted earlier (we hold the lock): never listed
        shutil.rmtree(stale, ignore_errors=True)
    name = kind + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    partial = root / f".partial-{name}"
    (partial / "volumes").mkdir(parents=True)
    started = time.monotonic()
    try:
        files: dict[str, FileEntry] = {}
        dump_started = datetime.now(timezone.utc).isoformat()
        with database(pipe, bundled, source.image_id) as db:
            if not bundled:
                db.check_client()
            sha, size = db.dump(partial / "database.dump")
        files["database.dump"] = {"sha256": sha, "size": size}
        print(f"backup: database dumped ({size / 1e6:.1f} MB)", flush=True)
        volumes: dict[str, VolumeEntry] = {}
        for short, volume in sorted(containers.volumes(settings.compose_project).items()):
            if short in NOT_ARCHIVED:
                continue
            with containers.helper(
                source.image_id, {volume.name: "/volume"}, project=settings.compose_project
            ) as helper:
                rel = f"volumes/{short}.tar"
                sha, size = containers.archive_out(helper.id, "/volume", partial / rel)
            files[rel] = {"sha256": sha, "size": size}
            volumes[short] = {"name": volume.name, "file": rel}
            print(f"backup: volume {short} ({size / 1e6:.1f} MB)", flush=True)
        manifest: Manifest = {
            "tool": TOOL,
            "project": settings.compose_project,
            "kind": kind.rstrip("-") or "backup",
            "created": datetime.now(timezone.utc).isoformat(),
            "database": {"bundled": bundled, "dump_started": dump_started},
            "volumes": volumes,
            "images": {"app": source.image_id},
            "source_commit": containers.image_labels(source.image_id).get(
                "org.opencontainers.image.revision"
            ),
            "files": files,
        }
        atomic_write_text(partial / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        final = root / name
        os.rename(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not kind:
        link = root / f".latest-{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(name)
        os.replace(link, root / "latest")
    print(f"backup: {final} complete in {time.monotonic() - started:.1f}s", flush=True)
    prune(pipe, kind)
    return final


def complete_backups(root: Path, kind: str = "") -> list[Path]:
    """Backup folders of one kind that this tool made and finished, oldest first."""
    found = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".") or path.is_symlink() or not path.is_dir():
            continue
        if path.name.startswith(PRE_RESTORE) != bool(kind):
            continue
        try:
            if json.loads((path / "manifest.json").read_text()).get("tool") == TOOL:
                found.append(path)
        except (OSError, ValueError):
            continue
    return found


def prune(pipe: Pipeline, kind: str = "") -> None:
    """Keep the backup_keep newest of each kind; folders this tool did not make stay."""
    keep = pipe.settings.backup_keep
    backups = complete_backups(pipe.settings.backup_dir, kind)
    for old in backups[: max(0, len(backups) - keep)]:
        shutil.rmtree(old)
        print(f"backup: removed {old.name} (keeping the {keep} newest)")


def verify(folder: Path) -> Manifest:
    """The manifest, once every file's sha256 matches; else BackupError naming the file."""
    try:
        manifest = cast(Manifest, json.loads((folder / "manifest.json").read_text()))
    except (OSError, ValueError):
        raise BackupError(
            f"{folder} has no readable manifest.json: not a complete backup"
        ) from None
    if manifest.get("tool") != TOOL:
        raise BackupError(f"{folder} was not made by this tool")
    files = manifest.get("files") or {}
    unlisted = [v["file"] for v in manifest.get("volumes", {}).values() if v["file"] not in files]
    if unlisted or "database.dump" not in files:
        missing = ", ".join(unlisted or ["database.dump"])
        raise BackupError(f"{folder.name}: {missing} has no checksum in the manifest: refused")
    for rel, expected in files.items():
        path = folder / rel
        if not path.is_file() or ".." in Path(rel).parts:
            raise BackupError(f"{folder.name}/{rel} is missing")
        if path.stat().st_size != expected["size"] or sha256_file(path) != expected["sha256"]:
            raise BackupError(f"{folder.name}/{rel} does not match its checksum: backup damaged")
    return manifest


def list_backups(pipe: Pipeline) -> None:
    root = pipe.settings.backup_dir
    latest = (root / "latest").resolve() if (root / "latest").exists() else None
    backups = sorted(complete_backups(root) + complete_backups(root, PRE_RESTORE))
    if not backups:
        print(f"backups: none in {root}")
    for folder in reversed(backups):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        age = time.time() - folder.stat().st_mtime
        try:
            verify(folder)
            state = "ok"
        except BackupError as exc:
            state = f"DAMAGED: {exc}"
        mark = " (latest)" if folder == latest else ""
        print(f"{folder.name}{mark}  {size / 1e6:8.1f} MB  {age / 3600:6.1f} h old  {state}")


def task(pipe: Pipeline, name: str) -> TaskDict:
    """`backup`, or `backups` (the list)."""
    if name == "backup":
        doc = "dump the database and archive the bundle's volumes into backup_dir"
        return command_task(pipe, doc, lambda: backup(pipe))
    doc = "list backups with size, age and checksum state"
    return command_task(pipe, doc, lambda: list_backups(pipe))
