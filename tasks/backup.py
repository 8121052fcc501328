"""backup / restore / backups: consistent database dumps plus volume archives, verified restore.

One implementation for the doit tasks and for `backup_volumes.sh` (`python -m tasks.backup`).
A backup is a folder `<backup_dir>/<UTC time>/`, readable by its owner only:
  database.dump       `pg_dump -Fc` of the running database (bundled or external): consistent,
                      unlike a tar of a live data directory
  volumes/<name>.tar  every named volume of the bundle except the raw PostgreSQL data
  manifest.json       volumes, sizes, sha256 of every file, image IDs, source commit, times
It is written as `.partial-<time>/` and renamed when complete; only then does `latest` move.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks import bundle
from tasks.content import atomic_write_text
from tasks.errors import DurangoError
from tasks.pipeline import Pipeline, action

TOOL = "durango-backup/1"
APP, DB = "orangescrum-app", "orangescrum-db"
RAW_DATABASE_VOLUME = "db-data"
DUMP_IN_CONTAINER = "/tmp/durango-backup.dump"
# Connection settings for PostgreSQL's client tools, from the container's own environment: in the
# bundled database container its POSTGRES_* (local socket), in a helper with the app's settings
# its DB_* (the password stays in the environment, never on a command line).
BUNDLED_CLIENT = 'export PGUSER=$POSTGRES_USER PGDATABASE=${POSTGRES_DB:-$POSTGRES_USER}; "$@"'
EXTERNAL_CLIENT = (
    'if [ -n "${DB_PASSWORD_FILE:-}" ]; then PGPASSWORD=$(cat "$DB_PASSWORD_FILE"); '
    "else PGPASSWORD=$DB_PASSWORD; fi; "
    "export PGPASSWORD PGHOST=$DB_HOST PGPORT=${DB_PORT:-5432} PGUSER=$DB_USERNAME "
    'PGDATABASE=$DB_NAME; "$@"'
)


class BackupError(DurangoError):
    """A backup or restore cannot proceed; the message says what to do."""


def backup_root(pipe: Pipeline) -> Path:
    path = Path(pipe.settings.backup_dir)
    return path if path.is_absolute() else pipe.settings.root / path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Database:
    """Where SQL runs: inside the bundled database container, or in a helper container that
    has the app's environment (external database)."""

    def __init__(self, pipe: Pipeline, bundled: bool, image: str, app: Any | None) -> None:
        self.engine = pipe.engine
        self.bundled = bundled
        self.helper = None
        if bundled:
            self.container = self.engine.service_container(pipe.settings.compose_project, DB)
            if self.container is None:
                raise BackupError(f"the bundled database ({DB}) is not running")
        else:
            if app is None:
                raise BackupError(f"{APP} is not running: its settings name the database")
            self.helper = self.engine.helper_container(image, {}, like=app)
            self.container = self.helper

    def run(self, *cmd: str) -> str:
        """A client command with the connection settings in its environment."""
        wrapper = BUNDLED_CLIENT if self.bundled else EXTERNAL_CLIENT
        return str(self.engine.exec(self.container, ["sh", "-c", wrapper, "sh", *cmd]))

    def dump(self, dest: Path) -> tuple[str, int]:
        self.run("pg_dump", "-Fc", "-f", DUMP_IN_CONTAINER)
        try:
            sha, size = self.engine.file_out(self.container, DUMP_IN_CONTAINER, dest)
        finally:
            self.engine.exec(self.container, ["rm", "-f", DUMP_IN_CONTAINER], user="0")
        return sha, size

    def restore(self, dump: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="durango-restore-") as tmp:
            packed = Path(tmp, "dump.tar")
            with tarfile.open(packed, "w") as tar:
                info = tar.gettarinfo(dump, arcname=DUMP_IN_CONTAINER.lstrip("/"))
                info.mode, info.uid, info.gid = 0o644, 0, 0  # readable by the database's user
                with dump.open("rb") as data:
                    tar.addfile(info, data)
            self.engine.archive_in(self.container, "/", packed)
        try:
            self.run(
                "sh",
                "-c",
                'pg_restore --no-owner --exit-on-error -d "$PGDATABASE" "$0"',
                DUMP_IN_CONTAINER,
            )
        finally:
            self.engine.exec(self.container, ["rm", "-f", DUMP_IN_CONTAINER], user="0")

    def close(self) -> None:
        if self.helper is not None:
            self.helper.remove(force=True)


def _running(pipe: Pipeline) -> tuple[Any | None, Any | None]:
    project = pipe.settings.compose_project
    return pipe.engine.service_container(project, APP), pipe.engine.service_container(project, DB)


def backup(pipe: Pipeline) -> Path:
    settings, engine = pipe.settings, pipe.engine
    app, db = _running(pipe)
    if app is None and db is None:
        raise BackupError(
            f"nothing of compose project {settings.compose_project} is running; start it first "
            "(doit up) so that the database can be dumped consistently"
        )
    running = app or db
    assert running is not None
    image = running.image.id
    root = backup_root(pipe)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in root.glob(".partial-*"):  # interrupted earlier: never complete, never listed
        shutil.rmtree(stale, ignore_errors=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    partial = root / f".partial-{stamp}"
    (partial / "volumes").mkdir(mode=0o700, parents=True)
    started = time.monotonic()
    try:
        files: dict[str, dict[str, Any]] = {}
        dump_started = datetime.now(timezone.utc).isoformat()
        database = Database(pipe, bundled=db is not None, image=image, app=app)
        try:
            sha, size = database.dump(partial / "database.dump")
        finally:
            database.close()
        files["database.dump"] = {"sha256": sha, "size": size}
        print(f"backup: database dumped ({size / 1e6:.1f} MB)", flush=True)
        volumes = {}
        for short, volume in sorted(engine.project_volumes(settings.compose_project).items()):
            if short == RAW_DATABASE_VOLUME:
                continue  # the dump above is its consistent copy
            helper = engine.helper_container(image, {volume.name: "/volume"})
            try:
                rel = f"volumes/{short}.tar"
                sha, size = engine.archive_out(helper, "/volume", partial / rel)
            finally:
                helper.remove(force=True)
            files[rel] = {"sha256": sha, "size": size}
            volumes[short] = {"name": volume.name, "file": rel}
            print(f"backup: volume {short} ({size / 1e6:.1f} MB)", flush=True)
        labels = running.image.labels or {}
        manifest = {
            "tool": TOOL,
            "project": settings.compose_project,
            "created": datetime.now(timezone.utc).isoformat(),
            "database": {"bundled": db is not None, "dump_started": dump_started},
            "volumes": volumes,
            "images": {
                "app": app.image.id if app else None,
                "database": db.image.id if db else None,
            },
            "source_commit": labels.get("org.opencontainers.image.revision"),
            "files": files,
        }
        atomic_write_text(partial / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        for path in partial.rglob("*"):
            path.chmod(0o700 if path.is_dir() else 0o600)
        final = root / stamp
        os.rename(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    link = root / f".latest-{os.getpid()}"
    link.unlink(missing_ok=True)
    link.symlink_to(stamp)
    os.replace(link, root / "latest")
    print(f"backup: {final} complete in {time.monotonic() - started:.1f}s", flush=True)
    prune(pipe)
    return final


def complete_backups(root: Path) -> list[Path]:
    """Backup folders this tool made and finished, oldest first."""
    found = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".") or path.is_symlink() or not path.is_dir():
            continue
        try:
            if json.loads((path / "manifest.json").read_text()).get("tool") == TOOL:
                found.append(path)
        except (OSError, ValueError):
            continue
    return found


def prune(pipe: Pipeline) -> None:
    keep = int(pipe.settings.backup_keep)
    backups = complete_backups(backup_root(pipe))
    for old in backups[: max(0, len(backups) - keep)]:
        shutil.rmtree(old)
        print(f"backup: removed {old.name} (keeping the {keep} newest)")


def verify(folder: Path) -> dict[str, Any]:
    """The manifest, once every file's sha256 matches; else BackupError naming the file."""
    try:
        manifest = dict(json.loads((folder / "manifest.json").read_text()))
    except (OSError, ValueError):
        raise BackupError(
            f"{folder} has no readable manifest.json: not a complete backup"
        ) from None
    if manifest.get("tool") != TOOL:
        raise BackupError(f"{folder} was not made by this tool")
    for rel, expected in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise BackupError(f"{folder.name}/{rel} is missing")
        if path.stat().st_size != expected["size"] or _sha256(path) != expected["sha256"]:
            raise BackupError(f"{folder.name}/{rel} does not match its checksum: backup damaged")
    return manifest


def resolve(pipe: Pipeline) -> Path:
    name = pipe.settings.restore_from
    candidate = Path(name) if Path(name).is_absolute() else backup_root(pipe) / name
    if not candidate.exists():
        raise BackupError(f"no backup {candidate}; `doit backups` lists them")
    return candidate.resolve()


def restore(pipe: Pipeline) -> None:
    settings, engine = pipe.settings, pipe.engine
    folder = resolve(pipe)
    manifest = verify(folder)
    print(f"restore: {folder.name} verified ({len(manifest['files'])} files)", flush=True)
    if settings.confirm != "yes":
        raise BackupError(
            f"restore replaces the volumes and the database of {settings.compose_project} with "
            f"{folder.name}; run again with confirm=yes"
        )
    bundled = manifest["database"]["bundled"]
    app, _ = _running(pipe)
    image = manifest["images"]["app"] or manifest["images"]["database"]
    bundle.compose(pipe, "stop", APP)
    if bundled:
        bundle.compose(pipe, "up", "--detach", "--wait", DB)
    for short, entry in sorted(manifest["volumes"].items()):
        volume = engine.ensure_volume(settings.compose_project, short)
        helper = engine.helper_container(image, {volume.name: "/volume"})
        try:
            engine.exec(helper, ["find", "/volume", "-mindepth", "1", "-delete"])
            engine.archive_in(helper, "/", folder / entry["file"])
        finally:
            helper.remove(force=True)
        print(f"restore: volume {short}", flush=True)
    database = Database(pipe, bundled=bundled, image=image, app=app)
    try:
        tables = database.run(
            "psql", "-Atc", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).strip()
        if tables != "0":
            if settings.drop_database != "yes":
                raise BackupError(
                    f"the database is not empty ({tables} tables); add drop_database=yes to "
                    "drop its public schema before restoring"
                )
            database.run("psql", "-c", "DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        database.restore(folder / "database.dump")
    finally:
        database.close()
    print("restore: database restored", flush=True)
    bundle.compose(pipe, "up", "--detach", "--wait")
    print(f"restore: {settings.compose_project} running on {folder.name}")


def list_backups(pipe: Pipeline) -> None:
    root = backup_root(pipe)
    latest = (root / "latest").resolve() if (root / "latest").exists() else None
    backups = complete_backups(root)
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


def tasks(pipe: Pipeline) -> dict[str, dict[str, Any]]:
    return {
        "backup": {
            "doc": "dump the database and archive the bundle's volumes into backup_dir",
            "actions": [action(pipe, lambda: backup(pipe))],
            "uptodate": [False],
            "verbosity": 2,
        },
        "restore": {
            "doc": "verify and restore a backup (restore_from=NAME, confirm=yes)",
            "actions": [action(pipe, lambda: restore(pipe))],
            "uptodate": [False],
            "verbosity": 2,
        },
        "backups": {
            "doc": "list backups with size, age and checksum state",
            "actions": [action(pipe, lambda: list_backups(pipe))],
            "uptodate": [False],
            "verbosity": 2,
        },
    }


def main(argv: list[str]) -> int:
    """backup_volumes.sh: the same backups from the shell."""
    import argparse

    parser = argparse.ArgumentParser(prog="backup_volumes.sh", description=__doc__.split("\n")[0])
    parser.add_argument(
        "command", choices=["backup", "list", "restore"], nargs="?", default="backup"
    )
    parser.add_argument("--dest", help="backup folder (default: backups/)")
    parser.add_argument("--keep", help="backups to keep (default 7)")
    parser.add_argument("--from", dest="restore_from", help="backup to restore (default latest)")
    parser.add_argument("--yes", action="store_true", help="confirm the restore")
    parser.add_argument("--drop", action="store_true", help="drop a non-empty database first")
    parser.add_argument("--env-file", help="compose env file (default orangescrum-ee/.env)")
    parser.add_argument("--project", help="compose project (default orangescrum-ee)")
    args = parser.parse_args(argv)
    from tasks.settings import load_settings

    cli = {
        key: value
        for key, value in {
            "backup_dir": args.dest,
            "backup_keep": args.keep,
            "restore_from": args.restore_from,
            "confirm": "yes" if args.yes else None,
            "drop_database": "yes" if args.drop else None,
            "env_file": args.env_file,
            "compose_project": args.project,
        }.items()
        if value is not None
    }
    try:
        pipe = Pipeline(load_settings(Path(__file__).resolve().parent.parent, cli))
        {"backup": backup, "list": list_backups, "restore": restore}[args.command](pipe)
    except DurangoError as exc:
        print(f"backup_volumes: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
