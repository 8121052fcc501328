"""restore: put a backup back, never destroying what it cannot put back.

Order (docs/VOLUME_SAFETY.md states each guarantee and its test):
  1. Every check before anything changes: every file's checksum (volume archives included);
     only volumes the bundle owns, never the raw database volume; every tar member a plain file,
     folder or link inside its volume (no devices, FIFOs, setuid/setgid, paths outside); the
     helper image present; the database reachable, and empty unless --drop-database.
  2. Stop every app service (app, queue worker, replicas): nothing writes during the restore.
  3. A pre-restore snapshot, in the backup format, beside the other backups; the command that
     rolls back to it is printed before anything is changed.
  4. The database in one transaction (schema dropped and dump applied together: a failure or a
     kill leaves the old database whole), then each volume, owners and modes as archived.
  5. The services that ran are started again.
`--confirm` and `--drop-database` are per-run task parameters, never settings.
"""

from __future__ import annotations

import stat
import tarfile
from pathlib import Path, PurePosixPath

from tasks.core.errors import BackupError, DurangoError
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.deploy import backup as backups
from tasks.deploy import bundle
from tasks.deploy.backup import NOT_ARCHIVED, PRE_RESTORE, Manifest
from tasks.deploy.database import APP, DB, Database, database

RESTORE_DUMP = "/tmp/durango-restore.dump"
RESTORE_SQL = "/tmp/durango-restore.sql"
# pg_restore writes the dump as SQL first (its own exit status checked), then psql applies the
# optional schema drop and that SQL as one transaction that stops at the first error.
APPLY_DUMP = (
    'dump=$0 sql=$1; shift; pg_restore --no-owner --exit-on-error -f "$sql" "$dump" && '
    'psql -X -q -v ON_ERROR_STOP=1 --single-transaction "$@"'
)


def resolve(pipe: Pipeline, name: str) -> Path:
    candidate = Path(name) if Path(name).is_absolute() else pipe.settings.backup_dir / name
    if not candidate.exists():
        raise BackupError(f"no backup {candidate}; `doit backups` lists them")
    return candidate.resolve()


def owned_volumes(pipe: Pipeline) -> set[str]:
    """Volumes the bundle's compose file declares, less those a restore never touches."""
    text = (pipe.settings.bundle_dir / "docker-compose.yaml").read_text()
    section = text.split("\nvolumes:\n", 1)[-1]
    names = {line.strip().rstrip(":") for line in section.splitlines() if line.startswith("  ")}
    return names - NOT_ARCHIVED


def check_volumes(manifest: Manifest, owned: set[str]) -> None:
    foreign = sorted(set(manifest["volumes"]) - owned)
    if foreign:
        raise BackupError(
            f"the backup names volume(s) {', '.join(foreign)}, which a restore never writes "
            f"(it restores only {', '.join(sorted(owned))}): refused, nothing changed"
        )


def check_archive(tar_path: Path) -> None:
    """Every member a plain file, folder or link below volume/, without setuid/setgid."""
    with tarfile.open(tar_path) as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            inside = path.parts[:1] == ("volume",) and ".." not in path.parts
            if not inside or path.is_absolute():
                raise BackupError(f"{tar_path.name}: {member.name} is outside the volume: refused")
            if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                raise BackupError(f"{tar_path.name}: {member.name} is a device or FIFO: refused")
            if member.mode & (stat.S_ISUID | stat.S_ISGID) and not member.isdir():
                raise BackupError(f"{tar_path.name}: {member.name} is setuid/setgid: refused")
            if member.islnk() and PurePosixPath(member.linkname).parts[:1] != ("volume",):
                raise BackupError(f"{tar_path.name}: {member.name} links outside the volume")


def restore(
    pipe: Pipeline, name: str = "latest", confirm: bool = False, drop_database: bool = False
) -> None:
    settings, containers = pipe.settings, pipe.containers
    project = settings.compose_project
    folder = resolve(pipe, name)
    manifest = backups.verify(folder)
    check_volumes(manifest, owned_volumes(pipe))
    for entry in manifest["volumes"].values():
        check_archive(folder / entry["file"])
    print(f"restore: {folder.name} verified ({len(manifest['files'])} files)", flush=True)
    if not confirm:
        raise BackupError(
            f"restore replaces the volumes and the database of {project} with {folder.name}; "
            "run again with --confirm"
        )
    image = manifest["images"]["app"]
    if not containers.image_exists(image):
        raise BackupError(
            f"the helper image {image[:19]} (the app image the backup was taken with) is not on "
            "this engine: rebuild or load it first; nothing changed"
        )
    bundled = bool(manifest["database"]["bundled"])
    if bundled and containers.service(project, DB) is None:
        bundle.compose(pipe, "up", "--detach", "--wait", DB)
    with database(pipe, bundled, image) as db:
        tables = db.table_count()
        if tables and not drop_database:
            raise BackupError(
                f"the database is not empty ({tables} tables); add --drop-database to replace "
                "it; nothing changed"
            )
    containers.remove_helpers(project)
    running = [s for s in containers.services(project) if s.service != DB and s.running]
    containers.stop(running)
    print(f"restore: stopped {', '.join(s.name for s in running) or 'nothing'}", flush=True)
    try:
        snapshot = backups.backup(pipe, PRE_RESTORE)
    except (DurangoError, KeyboardInterrupt):
        containers.start(running)
        print("restore: no pre-restore snapshot; nothing changed; services started again")
        raise
    rollback = f"doit restore --from {snapshot.name} --confirm --drop-database"
    print(f"restore: if this restore does not complete, roll back with: {rollback}", flush=True)
    try:
        _apply(pipe, folder, manifest, image, drop=tables > 0)
    except DurangoError as exc:
        raise BackupError(
            f"{exc}\nrestore failed; the app stays stopped; roll back with: {rollback}"
        ) from None
    bundle.compose(pipe, "up", "--detach", "--wait")
    containers.start([s for s in running if s.service != APP])
    print(f"restore: {project} running on {folder.name}")


def _apply(pipe: Pipeline, folder: Path, manifest: Manifest, image: str, drop: bool) -> None:
    """The destructive part: database first (one transaction), then each volume."""
    containers, project = pipe.containers, pipe.settings.compose_project
    print("restore: database (one transaction)", flush=True)
    with database(pipe, bool(manifest["database"]["bundled"]), image) as db:
        _restore_database(db, folder / "database.dump", drop)
    for short, entry in sorted(manifest["volumes"].items()):
        volume = containers.ensure_volume(project, short)
        with containers.helper(image, {volume.name: "/volume"}, project=project) as helper:
            containers.exec(helper.id, ["find", "/volume", "-mindepth", "1", "-delete"])
            containers.unpack(helper.id, "/", folder / entry["file"])
        print(f"restore: volume {short}", flush=True)


def _restore_database(db: Database, dump: Path, drop: bool) -> None:
    db.containers.put_file(db.target.id, RESTORE_DUMP, dump)
    first = ["-c", "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"] if drop else []
    try:
        db.run("sh", "-c", APPLY_DUMP, RESTORE_DUMP, RESTORE_SQL, *first, "-f", RESTORE_SQL)
    finally:
        db.containers.exec(db.target.id, ["rm", "-f", RESTORE_DUMP, RESTORE_SQL], user="0")


# One-shot consents: given per run on the command line, never stored in a setting.
PARAMS = [
    {"name": "source", "long": "from", "type": str, "default": "latest",
     "help": "backup to restore: a folder name under backup_dir, a path, or latest"},
    {"name": "confirm", "long": "confirm", "type": bool, "default": False,
     "help": "replace the bundle's volumes and database with the backup"},
    {"name": "drop_database", "long": "drop-database", "type": bool, "default": False,
     "help": "also replace a database that is not empty"},
]  # fmt: skip


def task(pipe: Pipeline) -> TaskDict:
    def run(source: str, confirm: bool, drop_database: bool) -> None:
        restore(pipe, source, confirm, drop_database)

    doc = "verify and restore a backup (--from NAME, --confirm, --drop-database)"
    return command_task(pipe, doc, run, params=PARAMS)
