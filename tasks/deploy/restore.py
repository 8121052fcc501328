"""restore: build the backup's state beside the live one, check it, then switch in one rename.

Under the project's lock, from the first check to the last write (docs/VOLUME_SAFETY.md states
each guarantee and its test):
  1. File checks: the manifest (this project's, every path inside the folder), every file's
     checksum, only volumes the bundle owns, every archive member one a restore may unpack.
     Only then is a stopped bundled database started (and stopped again on a refusal).
  2. Server checks, the app still running: leftovers of an interrupted restore removed;
     `pg_restore` as new as the dump's pg_dump, the dump readable, its schemas the manifest's;
     the right to create a database; free space for the snapshot, the staging database and
     the new volumes; the manifest's image on this engine.
  3. A pre-restore snapshot beside the other backups (never pruning the backup being read).
  4. The new generation (deploy/generations.py), still beside the running app: a new database
     `<db>_g<N>`, the dump streamed into `pg_restore` in one transaction, its row counts equal to
     the manifest's; new volumes `<project>_<volume>_g<N>`, unpacked with their owners and modes
     and listed against their archives. A failure removes what was made; nothing was stopped.
  5. The switch: app services stop, the live file names the new database, volumes and the
     manifest's image in one rename, the services start on them. A failure before the rename
     starts again what it stopped; a failure to start switches back.
The old generation stays, whole, as the way back: `doit restore-undo --confirm`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from tasks.core.errors import BackupError, DatabaseError, EngineError
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.deploy import backup as backups
from tasks.deploy import bundle, generations, project_lock, tenants
from tasks.deploy.backup import NOT_ARCHIVED, PRE_RESTORE
from tasks.deploy.database import DB, Database, database, quote_ident
from tasks.deploy.generations import Generation, Preparing
from tasks.formats import pg_output, volume_archive
from tasks.formats.backup_manifest import DUMP, Manifest
from tasks.formats.volume_archive import Entry

MARGIN = 1.1  # free space wanted beyond the estimate


def resolve(pipe: Pipeline, name: str) -> Path:
    candidate = Path(name) if Path(name).is_absolute() else pipe.settings.backup_dir / name
    if not candidate.exists():
        raise BackupError(f"no backup {candidate}; `doit backups` lists them")
    return candidate.resolve()


def owned_volumes(pipe: Pipeline) -> set[str]:
    """Volumes the bundle's compose file declares, less those a restore never touches."""
    return set(bundle.volumes(pipe)) - NOT_ARCHIVED


def check_manifest(manifest: Manifest, project: str, owned: set[str]) -> None:
    """The backup is this project's and names only volumes a restore may write."""
    if manifest.project != project:
        raise BackupError(
            f"the backup is of project {manifest.project}, not {project}: refused, nothing "
            "changed (restore it with compose_project / tenant set to its project)"
        )
    foreign = sorted(set(manifest.volumes) - owned)
    if foreign:
        raise BackupError(
            f"the backup names volume(s) {', '.join(foreign)}, which a restore never writes "
            f"(it restores only {', '.join(sorted(owned))}): refused, nothing changed"
        )


def check_archives(folder: Path, manifest: Manifest) -> dict[str, dict[str, Entry]]:
    """Every archive's members checked; the listing each new volume must show."""
    listings = {}
    for short, entry in sorted(manifest.volumes.items()):
        listing = volume_archive.check(folder / entry.file)
        if len(listing) != entry.entries or volume_archive.size(listing) != entry.bytes:
            raise BackupError(f"{entry.file} does not hold what the manifest says: refused")
        listings[short] = listing
    return listings


def check_dump(db: Database, dump: Path, manifest: Manifest) -> None:
    """pg_restore here reads this dump (no newer than itself), and its table of contents has
    the schemas the manifest lists."""
    listing = db.listing(dump)
    made_by = pg_output.dumped_by(listing)
    restorer = db.tool_version("pg_restore")
    if restorer[0] < made_by[0]:
        raise BackupError(
            f"the dump was made by pg_dump {made_by[0]} but pg_restore here is {restorer[0]}: "
            "refused before anything stopped (set backup_client_image to a newer client)"
        )
    schemas = pg_output.schemas(listing)
    if schemas != tuple(sorted(manifest.database.schemas)):
        raise BackupError(
            f"the dump's schemas ({', '.join(schemas)}) are not the manifest's "
            f"({', '.join(manifest.database.schemas)}): refused"
        )


def shortfalls(needs: list[tuple[str, int, int | None]], margin: float = MARGIN) -> list[str]:
    """(where, bytes needed, bytes free or None when unknown) -> one line per place short of
    space."""
    lines = []
    for where, need, free in needs:
        if free is not None and free < need * margin:
            wanted = need * margin / 1e6
            lines.append(f"{where} has {free / 1e6:.0f} MB free, needs {wanted:.0f} MB")
    return lines


VOLUME_SPACE = 'cd /v && du -sk -- * 2>/dev/null; echo "@free"; df -Pk /v/"$0"'


def volume_space(pipe: Pipeline, image: str, names: dict[str, str]) -> tuple[int, int | None]:
    """(bytes the current volumes hold, bytes free where volumes live), through one helper."""
    existing = {s: n for s, n in names.items() if pipe.containers.volume_labels(n) is not None}
    if not existing:
        return 0, None
    mounts = {name: f"/v/{short}" for short, name in existing.items()}
    project = pipe.settings.compose_project
    with pipe.containers.helper(image, mounts, project=project) as helper:
        first = sorted(existing)[0]
        done = pipe.containers.exec_stream(helper.id, ["sh", "-c", VOLUME_SPACE, first])
    used_text, _, free_text = done.out.decode().partition("@free")
    used = sum(int(line.split()[0]) * 1024 for line in used_text.splitlines() if line.strip())
    return used, pg_output.df_available(free_text)


def check_space(pipe: Pipeline, db: Database, manifest: Manifest, image: str) -> None:
    names = bundle.volumes(pipe)
    archived = {s: n for s, n in names.items() if s not in NOT_ARCHIVED}
    held, volumes_free = volume_space(pipe, image, archived)
    root = pipe.settings.backup_dir
    root.mkdir(parents=True, exist_ok=True)
    needs = [
        (f"the backup folder {root}", db.size(db.name) + held, shutil.disk_usage(root).free),
        ("the database server's disk", manifest.database.size, db.free_bytes()),
        ("the volumes' disk", manifest.volume_bytes(), volumes_free),
    ]
    short = shortfalls(needs)
    if short:
        raise BackupError(
            f"not enough space for the snapshot and the staging copy: {'; '.join(short)}; "
            "refused before anything stopped"
        )


@contextlib.contextmanager
def server(pipe: Pipeline, db: Database, image: str) -> Iterator[Database]:
    """Who creates and drops a generation's database: a tenant's server administrator, or the
    bundle's own client (the bundled superuser, or an external role with CREATEDB)."""
    if tenants.on_shared_server(pipe):
        with tenants.admin(pipe, image) as admin:
            yield admin
        return
    if not db.bundled and not db.can_create():
        user = db.env.get("PGUSER", "the app's role")
        raise BackupError(
            f"the role {user} may not create databases, which a restore needs for the one it "
            f"builds beside the live one: ALTER ROLE {user} CREATEDB; nothing changed"
        )
    yield db


def prepare(
    pipe: Pipeline,
    db: Database,
    creator: Database,
    folder: Path,
    manifest: Manifest,
    listings: dict[str, dict[str, Entry]],
    now: Generation,
) -> Generation:
    """The new generation beside the running app, checked; on any failure what it made goes."""
    containers, project = pipe.containers, pipe.settings.compose_project
    existing = {v.name for v in containers.project_volumes(project)}
    number = generations.next_number(pipe, existing)
    base = bundle.env(pipe).get("DB_NAME") or db.name
    new_db = generations.database_name(base, number)
    new_volumes = {s: generations.volume_name(pipe, s, number) for s in manifest.volumes}
    taken = [n for n in new_volumes.values() if containers.volume_labels(n) is not None]
    if creator.exists(new_db) or taken:
        raise BackupError(f"{new_db} or {', '.join(taken) or 'a volume'} exists already: refused")
    generations.begin(pipe, Preparing(number, new_db, sorted(new_volumes.values()), folder.name))
    try:
        owner = db.env.get("PGUSER", "") if creator is not db or db.bundled else ""
        creator.create(new_db, owner=owner, like=db.name)
        if creator is not db:
            creator.sql(f"REVOKE ALL ON DATABASE {quote_ident(new_db)} FROM PUBLIC;")
        print(f"restore: database {new_db} from {folder.name} (the app keeps running)", flush=True)
        db.restore_into(folder / DUMP, new_db)
        counts = db.count_rows(sorted(manifest.database.tables), new_db)
        if counts != manifest.database.tables:
            wrong = sorted(t for t in counts if counts[t] != manifest.database.tables.get(t))
            raise BackupError(f"{new_db}: row counts differ from the backup's ({', '.join(wrong)})")
        for short, name in sorted(new_volumes.items()):
            _volume(pipe, folder / manifest.volumes[short].file, short, name, manifest.image,
                    listings[short])  # fmt: skip
    except BaseException:
        _discard(pipe, creator, new_db, list(new_volumes.values()))
        raise
    volumes = {**now.volumes, **new_volumes}
    created = datetime.now(timezone.utc).isoformat()
    return Generation(number, new_db, volumes, manifest.image, folder.name, created, now.number)


def _volume(
    pipe: Pipeline, tar: Path, short: str, name: str, image: str, expected: dict[str, Entry]
) -> None:
    containers, project = pipe.containers, pipe.settings.compose_project
    containers.create_volume(name, project, short)
    with containers.helper(image, {name: "/volume"}, project=project) as helper:
        containers.unpack(helper.id, "/", tar)
        done = containers.exec_stream(helper.id, ["sh", "-c", volume_archive.LIST_VOLUME])
    found = volume_archive.from_volume(done.out.decode())
    if done.code != 0 or volume_archive.lines(found) != volume_archive.lines(expected):
        raise BackupError(f"volume {name} does not list as its archive {tar.name} does")
    print(f"restore: volume {short} -> {name} (checked)", flush=True)


def _discard(pipe: Pipeline, creator: Database, database_name: str, volumes: list[str]) -> None:
    """What a failed prepare made goes. When some of it cannot go now (the server is down),
    the prepare's record stays, and the next restore removes the rest before it starts."""
    pipe.containers.remove_helpers(pipe.settings.compose_project)
    left = []
    try:
        creator.drop(database_name)
    except (DatabaseError, EngineError):
        left.append(database_name)
    for name in volumes:
        try:
            pipe.containers.remove_volume(name)
        except EngineError:
            left.append(name)
    if left:
        print(f"restore: could not remove {', '.join(left)} now; the next restore does", flush=True)
    else:
        generations.end_preparing(pipe)


def restore(pipe: Pipeline, name: str = "latest", confirm: bool = False, wait: bool = True) -> None:
    with project_lock.held(pipe, "restore", wait):
        _restore(pipe, name, confirm)


def _restore(pipe: Pipeline, name: str, confirm: bool) -> None:
    settings, containers = pipe.settings, pipe.containers
    project = settings.compose_project
    folder = resolve(pipe, name)
    manifest = backups.verify(folder)
    check_manifest(manifest, project, owned_volumes(pipe))
    listings = check_archives(folder, manifest)
    print(f"restore: {folder.name} verified ({len(manifest.files)} files)", flush=True)
    if not confirm:
        raise BackupError(
            f"restore switches {project} to the database and volumes of {folder.name}, built "
            "beside the live ones (which stay as the way back); run again with --confirm"
        )
    image = manifest.image
    if not containers.image_exists(image):
        raise BackupError(
            f"the app image {image[7:19]} the backup was taken with (and that the restore "
            "starts) is not on this engine: rebuild or load it first; nothing changed"
        )
    containers.remove_helpers(project)
    started_db = bundle.bundled(pipe) and containers.service(project, DB) is None
    if started_db:
        bundle.compose(pipe, "up", "--detach", "--wait", DB)
    try:
        with database(pipe, image, app="durango-restore") as db, server(pipe, db, image) as owner:
            generations.recover(pipe, owner)
            check_dump(db, folder / DUMP, manifest)
            check_space(pipe, db, manifest, image)
        snapshot = backups.take(pipe, PRE_RESTORE, protect=folder)
        now = generations.current(pipe, backups.app_image(pipe))
        generations.save(pipe, now)
        with database(pipe, image, app="durango-restore") as db, server(pipe, db, image) as owner:
            target = prepare(pipe, db, owner, folder, manifest, listings, now)
    except BaseException:
        if started_db:
            bundle.compose(pipe, "stop", DB)
        raise
    generations.switch(pipe, target)
    generations.save(pipe, target)
    generations.end_preparing(pipe)
    print(
        f"restore: {project} runs on generation {target.number} ({folder.name}, image "
        f"{image[7:19]}); snapshot {snapshot.name}; the way back: `doit restore-undo --confirm` "
        f"(generation {now.number}, database {now.database}, stays until "
        f"`doit restore-drop --generation {now.number} --confirm`)"
    )


def drop(pipe: Pipeline, number: int, confirm: bool) -> None:
    with project_lock.held(pipe, "restore-drop"):
        image = backups.app_image(pipe)
        with database(pipe, image, app="durango-restore") as db, server(pipe, db, image) as owner:
            generations.recover(pipe, owner)
            gone = generations.drop(pipe, number, confirm, owner)
    print(f"restore-drop: generation {number} removed ({', '.join(gone) or 'nothing of its own'})")


# One-shot consents: given per run on the command line, never stored in a setting.
PARAMS = [
    {"name": "source", "long": "from", "type": str, "default": "latest",
     "help": "backup to restore: a folder name under backup_dir, a path, or latest"},
    {"name": "confirm", "long": "confirm", "type": bool, "default": False,
     "help": "switch the bundle to the backup's database and volumes (the old ones stay)"},
    {"name": "drop_database", "long": "drop-database", "type": bool, "default": False,
     "help": "no longer needed: a restore never drops nor overwrites the live database"},
]  # fmt: skip


def task(pipe: Pipeline, name: str = "restore") -> TaskDict:
    """`restore`, `restores` (the generations), `restore-undo` or `restore-drop`."""
    if name == "restores":
        doc = "list the generations a restore made, which is live, the way back"
        return command_task(pipe, doc, lambda: generations.list_generations(pipe))
    if name == "restore-undo":

        def run_undo(confirm: bool) -> None:
            generations.undo(pipe, confirm)

        doc = "switch back to the generation the last restore replaced (--confirm)"
        task_dict = command_task(pipe, doc, run_undo, params=generations.PARAMS_UNDO)
        return {**task_dict, "basename": name}
    if name == "restore-drop":

        def run_drop(generation: int, confirm: bool) -> None:
            drop(pipe, generation, confirm)

        doc = "drop a generation that is not live: its database and volumes (--generation N)"
        task_dict = command_task(pipe, doc, run_drop, params=generations.PARAMS_DROP)
        return {**task_dict, "basename": name}

    def run(source: str, confirm: bool, drop_database: bool) -> None:
        if drop_database:
            print("restore: --drop-database is no longer needed: the live database is never "
                  "dropped nor overwritten (it stays as the way back)")  # fmt: skip
        restore(pipe, source, confirm)

    doc = "restore a backup beside the live state and switch to it (--from NAME, --confirm)"
    return command_task(pipe, doc, run, params=PARAMS)
