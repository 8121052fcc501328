"""backup / backups: database dumps plus volume archives that count only once read back in full.

One implementation for the doit tasks and for `backup_volumes.sh` (tasks/cli/backup_volumes.py),
under the project's lock (deploy/project_lock.py): a second backup, a restore or a tenant
operation on the same project waits for it. A backup is a folder `<backup_dir>/<UTC time>/`
(`pre-restore-<UTC time>/` for the snapshot a restore takes first), private from its first byte
(umask 077):
  database.dump       `pg_dump -Fc` of the database the app uses, streamed from the client's
                      stdout into this file (nothing staged in a container), then read back in
                      full: every block through `pg_restore`, the rows of each table counted
  volumes/<name>.tar  every named volume of the bundle except the raw PostgreSQL data and the
                      app cache, each read back against its sha256 and listed
  manifest.json       formats/backup_manifest.py: project, kind, sequence, row counts, schemas,
                      versions, sizes, the app image, the sha256 of every file
It is written as `.partial-<name>/`, fsynced with its folder, then renamed; only then does
`latest` move and older backups of its kind go (by sequence, never by name; never the backup a
restore is reading).
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime
from pathlib import Path

from tasks.core.errors import BackupError, FormatError
from tasks.core.files import atomic_write_text, fsync_dir, fsync_tree, sha256_file
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.deploy import bundle, live, project_lock
from tasks.deploy.bundle import APP_SERVICES
from tasks.deploy.database import database
from tasks.formats import backup_manifest, pg_output, volume_archive
from tasks.formats.backup_manifest import (
    DUMP,
    DatabaseEntry,
    FileEntry,
    Manifest,
    Peek,
    VolumeEntry,
)

TOOL = backup_manifest.TOOL
# Never archived nor restored: the raw database files (the dump is their consistent copy) and
# the app cache (the binary extracts it again).
NOT_ARCHIVED = {"db-data", "app-cache"}
PRE_RESTORE = "pre-restore-"


def app_image(pipe: Pipeline) -> str:
    """The image ID the bundle's app runs (or ran, or will run): the helpers' image and what a
    restore of this backup starts."""
    project = pipe.settings.compose_project
    apps = [s for s in pipe.containers.services(project) if s.service == APP_SERVICES[0]]
    running = [s for s in apps if s.running] or apps
    if running:
        return running[0].image_id
    ref = bundle.compose_env(pipe)["APP_IMAGE"]
    found = pipe.engine.image(ref)
    if found is None:
        raise BackupError(f"the app image {ref} is not on this engine: build it first (doit)")
    return found.id


def backup(pipe: Pipeline, kind: str = "", wait: bool = True) -> Path:
    """Take a backup under the project's lock; its folder."""
    with project_lock.held(pipe, "backup", wait):
        return take(pipe, kind)


def take(pipe: Pipeline, kind: str = "", protect: Path | None = None) -> Path:
    """A backup (kind "") or a pre-restore snapshot (PRE_RESTORE); the caller holds the lock.
    `protect`: a backup retention must keep whatever it counts (the one a restore reads)."""
    pipe.containers.remove_helpers(pipe.settings.compose_project)  # a killed run's, if any
    image = app_image(pipe)
    root = pipe.settings.backup_dir
    saved_umask = os.umask(0o077)  # every file and folder private from its first byte
    try:
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        for stale in root.glob(".partial-*"):  # a killed backup's (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        sequence = next_sequence(root)
        name = _free_name(root, kind + pipe.clock().strftime("%Y%m%dT%H%M%S.%fZ"), sequence)
        partial = root / f".partial-{name}"
        try:
            (partial / "volumes").mkdir(parents=True)
            final = _write(pipe, partial, root / name, kind, sequence, image)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise BackupError(
                f"backup: cannot write into {root}: {exc.strerror or exc}; nothing was kept "
                "of this backup, the older ones are untouched"
            ) from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    finally:
        os.umask(saved_umask)
    if not kind:
        link = root / f".latest-{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(final.name)
        os.replace(link, root / "latest")
        fsync_dir(root)
    prune(pipe, kind, {final, *([protect] if protect else [])})
    return final


def _free_name(root: Path, name: str, sequence: int) -> str:
    """The folder's name: its UTC time (with the sequence when a stepped-back clock repeats it)."""
    return name if not (root / name).exists() else f"{name}-{sequence}"


def _write(
    pipe: Pipeline, partial: Path, final: Path, kind: str, sequence: int, image: str
) -> Path:
    settings, containers = pipe.settings, pipe.containers
    started = time.monotonic()
    files: dict[str, FileEntry] = {}
    dump = partial / DUMP
    with database(pipe, image, app="durango-backup") as db:
        if not db.bundled:
            db.check_client()
        pg_dump = "{}.{}".format(*db.tool_version("pg_dump"))
        server = "{}.{}".format(*db.server_version())
        size = db.size(db.name)
        dump_started = pipe.clock().isoformat()
        sha, written = db.dump(dump)
        if sha256_file(dump) != sha:
            raise BackupError(f"{dump} does not read back as it was written: disk trouble?")
        schemas = pg_output.schemas(db.listing(dump))
        read = db.full_read(dump)
        if read.status != 0 or read.unterminated:
            cut = f", {read.unterminated} cut short" if read.unterminated else ""
            raise BackupError(
                f"the dump of {db.name} does not read back in full (pg_restore status "
                f"{read.status}{cut}): not kept"
            )
        database_entry = DatabaseEntry(
            db.bundled, db.name, dump_started, pg_dump, server, size, schemas, read.tables
        )
    files[DUMP] = FileEntry(sha, written)
    rows = sum(read.tables.values())
    print(f"backup: database {db.name} dumped and read back ({written / 1e6:.1f} MB, "
          f"{len(read.tables)} tables, {rows} rows)", flush=True)  # fmt: skip
    volumes: dict[str, VolumeEntry] = {}
    project = settings.compose_project
    for short, name in sorted(bundle.volumes(pipe).items()):
        if short in NOT_ARCHIVED or containers.volume_labels(name) is None:
            continue
        rel = f"volumes/{short}.tar"
        with containers.helper(image, {name: "/volume"}, project=project) as helper:
            sha, written = containers.archive_out(helper.id, "/volume", partial / rel)
        if sha256_file(partial / rel) != sha:
            raise BackupError(f"{rel} does not read back as it was written: disk trouble?")
        listing, problems = volume_archive.scan(partial / rel)
        for problem in problems:
            print(f"backup: warning: {short}: {problem}; a restore will refuse it", flush=True)
        files[rel] = FileEntry(sha, written)
        volumes[short] = VolumeEntry(name, rel, len(listing), volume_archive.size(listing))
        print(f"backup: volume {short} read back ({written / 1e6:.1f} MB)", flush=True)
    labels = containers.image_labels(image)
    manifest = Manifest(
        tool=TOOL,
        project=project,
        kind=kind.rstrip("-") or "backup",
        sequence=sequence,
        created=pipe.clock().isoformat(),
        generation=live.generation(pipe),
        database=database_entry,
        volumes=volumes,
        images={"app": image},
        source_commit=labels.get("org.opencontainers.image.revision"),
        files=files,
    )
    atomic_write_text(partial / "manifest.json", backup_manifest.dumps(manifest))
    fsync_tree(partial)
    os.rename(partial, final)
    fsync_dir(final.parent)
    print(f"backup: {final} complete in {time.monotonic() - started:.1f}s", flush=True)
    return final


# --- which backups exist, in which order, and which go ---------------------------------------


def _peek(folder: Path) -> Peek | None:
    try:
        return backup_manifest.peek((folder / "manifest.json").read_text())
    except OSError:
        return None


def complete_backups(root: Path, kind: str | None = "") -> list[tuple[Path, Peek]]:
    """Finished backups this tool made, of one kind ("" or PRE_RESTORE; None: both), oldest
    first by sequence. Folders it did not make are never listed, so never pruned."""
    found = []
    for path in root.iterdir() if root.is_dir() else []:
        if path.name.startswith(".") or path.is_symlink() or not path.is_dir():
            continue
        peeked = _peek(path)
        if peeked is None:
            continue
        if kind is not None and (peeked.kind == "pre-restore") != bool(kind):
            continue
        found.append((path, peeked))
    return sorted(found, key=lambda item: (item[1].sequence, item[0].name))


def next_sequence(root: Path) -> int:
    """One more than any backup's in this folder (of either kind): monotonic whatever the
    clock does."""
    return max((p.sequence for _, p in complete_backups(root, None)), default=0) + 1


def to_prune(ordered: list[Path], keep: int, protect: set[Path]) -> list[Path]:
    """Of backups oldest first, those beyond the `keep` newest, never one in `protect`."""
    excess = len(ordered) - keep
    remove = []
    for path in ordered:
        if excess <= 0:
            break
        if path in protect:
            continue
        remove.append(path)
        excess -= 1
    return remove


def prune(pipe: Pipeline, kind: str = "", protect: set[Path] | None = None) -> None:
    """Keep the backup_keep newest of a kind (the new one's files and folder are on disk by
    now); never remove one in `protect`."""
    keep = pipe.settings.backup_keep
    protected = {path.resolve() for path in protect or set()}
    ordered = [path.resolve() for path, _ in complete_backups(pipe.settings.backup_dir, kind)]
    for old in to_prune(ordered, keep, protected):
        shutil.rmtree(old)
        print(f"backup: removed {old.name} (keeping the {keep} newest)")
    fsync_dir(pipe.settings.backup_dir)


def verify(folder: Path) -> Manifest:
    """The manifest, once every file it names is inside the folder and matches its sha256;
    else BackupError naming the file."""
    try:
        manifest = backup_manifest.read((folder / "manifest.json").read_text(), folder.name)
    except OSError:
        raise BackupError(
            f"{folder} has no readable manifest.json: not a complete backup"
        ) from None
    except FormatError as exc:
        raise BackupError(f"{exc}: refused") from None
    inside = folder.resolve()
    for rel, expected in manifest.files.items():
        path = (folder / rel).resolve()
        if inside not in path.parents or not path.is_file():
            raise BackupError(f"{folder.name}/{rel} is missing")
        if path.stat().st_size != expected.size or sha256_file(path) != expected.sha256:
            raise BackupError(f"{folder.name}/{rel} does not match its checksum: backup damaged")
    return manifest


def list_backups(pipe: Pipeline) -> None:
    root = pipe.settings.backup_dir
    latest = (root / "latest").resolve() if (root / "latest").exists() else None
    backups = complete_backups(root, None)
    if not backups:
        print(f"backups: none in {root}")
    for folder, peeked in reversed(backups):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        try:
            manifest = verify(folder)
            created = datetime.fromisoformat(manifest.created)
            age = f"{(pipe.clock() - created).total_seconds() / 3600:6.1f} h old"
            state = f"ok, app image {manifest.image[7:19]}"
        except (BackupError, ValueError) as exc:
            age, state = "", f"DAMAGED: {exc}"
        mark = " (latest)" if folder == latest else ""
        print(f"#{peeked.sequence} {folder.name}{mark}  {size / 1e6:8.1f} MB  {age}  {state}")


def task(pipe: Pipeline, name: str) -> TaskDict:
    """`backup`, or `backups` (the list)."""
    if name == "backup":
        doc = "dump the database and archive the bundle's volumes into backup_dir, read back"
        return command_task(pipe, doc, lambda: backup(pipe))
    doc = "list backups with sequence, size, age and checksum state"
    return command_task(pipe, doc, lambda: list_backups(pipe))
