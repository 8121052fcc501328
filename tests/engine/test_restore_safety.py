"""Restores under faults (bundled PostgreSQL, demo app). A restore builds the backup's state
beside the live one and switches in one rename, so: a refused restore changes nothing and never
stops the app; a restore killed at any moment (doit, or the PostgreSQL server) leaves the old
state or the new one, whole, database and every volume file together, and no client of it runs
on; the next restore clears what a killed one left; restored files keep their owners and modes;
a second schema comes back with the rest."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import tarfile
import time
from pathlib import Path

import docker
import pytest
from helpers import (
    DATA_VOLUMES,
    Bundle,
    big_data,
    data_state,
    databases,
    db_container,
    db_sql,
    doit_popen,
    http,
    live_values,
    live_volume,
    project_volumes,
    restore_copying,
    wait_until,
)

VOLUMES = ["/data/uploads", "/data/logs", "/data/files", "/data/sessions"]


def add_after_backup(bundle: Bundle) -> None:
    assert http(bundle.port, "/api/actions", {"name": "after-backup"})[0] == 201
    bundle.app_exec("echo fresh > /data/uploads/fresh.txt")


def rewrite_manifest(folder: Path, change: object) -> None:
    path = folder / "manifest.json"
    path.chmod(0o600)
    manifest = json.loads(path.read_text())
    change(manifest)  # type: ignore[operator]
    path.write_text(json.dumps(manifest))


def resum(folder: Path, rel: str) -> None:
    """The manifest's checksum of a file made to match it again (as someone editing both)."""
    data = (folder / rel).read_bytes()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    rewrite_manifest(folder, lambda m: m["files"].__setitem__(rel, entry))


def add_members(folder: Path, *members: tarfile.TarInfo) -> None:
    tar_path = folder / "volumes" / "app-uploads.tar"
    with tarfile.open(tar_path, "a") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"evil") if member.isfile() else None)
    resum(folder, "volumes/app-uploads.tar")


def member(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 4 if kind == tarfile.REGTYPE else 0
    return info


def inject(fault: str, folder: Path, tmp_path: Path) -> None:
    if fault == "tampered volume archive":
        tar = folder / "volumes" / "app-uploads.tar"
        data = bytearray(tar.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tar.write_bytes(bytes(data))
    elif fault == "a FIFO and a path outside":
        add_members(folder, member("volume/pipe", tarfile.FIFOTYPE),
                    member("volume/../etc/evil", tarfile.REGTYPE))  # fmt: skip
    elif fault == "a link to a secret":
        secret = "/data/tmp/orangescrum-entrypoint/pgpass"
        add_members(folder, member("volume/leak", tarfile.SYMTYPE, secret))
    elif fault == "a link out and a write through it":
        add_members(folder, member("volume/etc", tarfile.SYMTYPE, "../../etc"),
                    member("volume/etc/evil", tarfile.REGTYPE))  # fmt: skip
    elif fault == "an absolute path in the manifest":
        outside = tmp_path / "elsewhere.tar"
        shutil.copy(folder / "volumes" / "app-uploads.tar", outside)

        def point_outside(m: dict) -> None:
            m["volumes"]["app-uploads"]["file"] = str(outside)
            m["files"][str(outside)] = m["files"]["volumes/app-uploads.tar"]

        rewrite_manifest(folder, point_outside)
    elif fault == "another project's backup":
        rewrite_manifest(folder, lambda m: m.__setitem__("project", "orangescrum-other"))
    elif fault == "a manifest naming db-data":
        entry = {"name": "x_db-data", "file": "volumes/app-uploads.tar", "entries": 1, "bytes": 0}
        rewrite_manifest(folder, lambda m: m["volumes"].__setitem__("db-data", entry))
    elif fault == "a missing app image":
        rewrite_manifest(folder, lambda m: m["images"].__setitem__("app", "sha256:" + "0" * 64))
    elif fault == "a dump newer than pg_restore":
        dump = folder / "database.dump"
        data = bytearray(dump.read_bytes())
        assert data[:5] == b"PGDMP"
        data[6] = 99  # archive format 1.99: no pg_restore reads it
        dump.write_bytes(bytes(data))
        resum(folder, "database.dump")


REFUSALS = [
    ("no consent", "run again with --confirm"),
    ("tampered volume archive", "volumes/app-uploads.tar does not match its checksum"),
    ("a FIFO and a path outside", "app-uploads.tar: volume/pipe is a device or FIFO"),
    ("a link to a secret", "volume/leak links outside the volume"),
    ("a link out and a write through it", "volume/etc links outside the volume (../../etc)"),
    ("an absolute path in the manifest", "is not inside the backup folder"),
    ("another project's backup", "the backup is of project orangescrum-other"),
    ("a manifest naming db-data", "the backup names volume(s) db-data"),
    ("a missing app image", "is not on this engine"),
    ("a dump newer than pg_restore", "unsupported version (1.99) in file header"),
]


@pytest.fixture(scope="module")
def backed_up(module_bundle: Bundle) -> tuple[Bundle, Path]:
    """One bundle, its backup, then a row and a file added that the backup does not hold: a
    restore that went through would show."""
    module_bundle.doit("backup")
    folder = module_bundle.latest()
    add_after_backup(module_bundle)
    return module_bundle, folder


@pytest.mark.parametrize(("fault", "message"), REFUSALS)
def test_a_refused_restore_changes_nothing_and_never_stops_the_app(
    backed_up: tuple[Bundle, Path], tmp_path: Path, fault: str, message: str
) -> None:
    bundle, good = backed_up
    folder = bundle.backups / f"faulty-{REFUSALS.index((fault, message))}"
    shutil.copytree(good, folder)  # each fault on its own copy of the one backup
    inject(fault, folder, tmp_path)
    before, started = data_state(bundle), bundle.started()
    volumes, dbs = project_volumes(bundle.project), databases(bundle)
    confirm = [] if fault == "no consent" else ["--confirm"]
    run = bundle.doit("restore", "--from", folder.name, *confirm, check=False)
    assert run.code != 0 and message in run.out, run.out
    assert "Traceback" not in run.out
    assert data_state(bundle) == before
    assert bundle.started() == started  # never stopped
    assert project_volumes(bundle.project) == volumes and databases(bundle) == dbs
    assert http(bundle.port, "/home/healthcheck")[0] == 200


def test_a_refusal_leaves_a_stopped_bundled_database_as_it_was(bundle: Bundle) -> None:
    bundle.doit("backup")
    good = bundle.latest()
    bundle.compose_run("stop")
    db = db_container(bundle)

    def started_at() -> str:
        return bundle.compose_run("ps", "-a", "--format", "{{.State}}", "orangescrum-db").stdout

    # a file check refuses before the database is started at all
    tampered = bundle.backups / "tampered"
    shutil.copytree(good, tampered)
    inject("tampered volume archive", tampered, bundle.backups)
    run = bundle.doit("restore", "--from", "tampered", "--confirm", check=False)
    assert run.code != 0 and "does not match its checksum" in run.out
    assert "Up" not in bundle.compose_run("ps", "-a", "orangescrum-db").stdout
    # a server check refuses after starting it, and stops it again
    newer = bundle.backups / "newer"
    shutil.copytree(good, newer)
    inject("a dump newer than pg_restore", newer, bundle.backups)
    run = bundle.doit("restore", "--from", "newer", "--confirm", check=False)
    assert run.code != 0 and "unsupported version" in run.out, run.out
    assert "exited" in started_at() and db == db_container(bundle)
    assert live_values(bundle) == {} and "_g" not in " ".join(project_volumes(bundle.project))


def app_started(bundle: Bundle) -> list[str]:
    """When each app service last started (the database server's restarts aside)."""
    return [line for line in bundle.started().splitlines() if "orangescrum-db" not in line]


def db_pid(bundle: Bundle, engine: docker.DockerClient) -> int:
    return int(engine.containers.get(db_container(bundle)).attrs["State"]["Pid"])


def restore_sessions(bundle: Bundle) -> str:
    """Sessions a restore holds: its own (application_name) and any in a generation's
    database (pg_restore's)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
        "(application_name LIKE 'durango%' OR datname LIKE '%\\_g%' OR query LIKE 'COPY %')"
    )
    return db_sql(bundle, query)


def wait_db(bundle: Bundle, timeout: float = 120) -> None:
    def ready() -> bool:
        ps = bundle.compose_run("exec", "-T", "orangescrum-db", "pg_isready", check=False)
        return ps.returncode == 0

    wait_until(ready, timeout, "the database server")


@pytest.mark.parametrize("point", ["copy", "volumes", "stopped", "switched", "postgres server"])
def test_a_killed_restore_leaves_the_old_or_the_new_state_whole(
    bundle: Bundle, engine: docker.DockerClient, point: str
) -> None:
    big_data(bundle)
    bundle.doit("backup")
    backed_up = data_state(bundle)
    add_after_backup(bundle)
    old, started = data_state(bundle), app_started(bundle)
    app = bundle.compose_run("ps", "-q", "orangescrum-app").stdout.strip()
    proc = doit_popen(bundle, "restore", "--confirm")
    new_uploads = f"{bundle.project}_app-uploads_g1"

    def unpacking() -> bool:
        found = engine.volumes.list(filters={"name": new_uploads})
        return bool(found) and (Path(found[0].attrs["Mountpoint"]) / "big.bin").exists()

    def app_stopped() -> bool:
        return not engine.containers.get(app).attrs["State"]["Running"]

    gate = {
        "copy": lambda: restore_copying(bundle),
        "volumes": unpacking,
        "stopped": app_stopped,
        "switched": lambda: live_values(bundle).get("GENERATION") == "1",
        "postgres server": lambda: restore_copying(bundle),
    }[point]
    wait_until(lambda: gate() or proc.poll() is not None, 300, f"the restore's {point}")
    assert proc.poll() is None, proc.communicate()[0]
    if point == "postgres server":
        os.kill(db_pid(bundle, engine), signal.SIGKILL)
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode != 0 and "Traceback" not in out, out
        wait_db(bundle)
    else:
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        wait_until(lambda: restore_sessions(bundle) == "0", 10, "the end of the restore's sessions")
        assert time.monotonic() - killed < 5  # no pg_restore outlives doit
    if point == "switched":  # the commit happened: the new state, whole
        bundle.doit("up")
        assert data_state(bundle) == backed_up
        assert live_volume(bundle, "app-uploads") == new_uploads
        return
    if point == "stopped":
        bundle.doit("up")
    else:
        assert app_started(bundle) == started  # the app was never stopped
    assert live_values(bundle) == {} and data_state(bundle) == old  # the old state, whole
    assert http(bundle.port, "/home/healthcheck")[0] == 200
    # the next restore clears what the killed one left, and completes
    bundle.doit("restore", "--confirm")
    assert data_state(bundle) == backed_up
    generation = {v for v in project_volumes(bundle.project) if "_g" in v}
    assert generation == {live_volume(bundle, short) for short in DATA_VOLUMES}  # no leftover
    assert databases(bundle) == {"postgres", "template0", "template1", "orangescrum_test",
                                 live_values(bundle)["DB_NAME"]}  # fmt: skip
    assert http(bundle.port, "/home/healthcheck")[0] == 200


def test_a_restore_keeps_owners_and_modes_and_the_app_can_write_every_volume(
    bundle: Bundle,
) -> None:
    listing = "find " + " ".join(VOLUMES) + " -exec stat -c '%u:%g %a %n' {} + | sort"
    bundle.app_exec(
        "mkdir -p /data/uploads/a && echo x > /data/uploads/a/f && chmod 640 /data/uploads/a/f"
    )
    before = bundle.app_exec(listing)
    bundle.doit("backup")
    bundle.compose_run("down", "--volumes")
    bundle.doit("restore", "--confirm")
    assert bundle.app_exec(listing) == before
    for volume in VOLUMES:
        bundle.app_exec(f"touch {volume}/written-after-restore && id -u")
    assert bundle.app_exec("id -u").strip() == "10001"


def test_a_second_schema_comes_back_with_the_rest(bundle: Bundle) -> None:
    bundle.sql("CREATE SCHEMA extra; CREATE TABLE extra.notes AS SELECT 'kept' AS t")
    bundle.doit("backup")
    backed_up = data_state(bundle)
    bundle.sql("INSERT INTO extra.notes VALUES ('after-backup')")
    add_after_backup(bundle)
    bundle.doit("restore", "--confirm")
    assert data_state(bundle) == backed_up
    notes = db_sql(bundle, "SELECT string_agg(t, ',') FROM extra.notes", "orangescrum_test_g1")
    assert notes == "kept" and live_values(bundle)["DB_NAME"] == "orangescrum_test_g1"
    assert all(live_volume(bundle, short).endswith("_g1") for short in DATA_VOLUMES)


@pytest.mark.parametrize(("setting", "line"), [
    ("backup_keep=0", "backup_keep must be a whole number of at least 1, not '0'"),
    ("backup_keep=seven", "backup_keep must be a whole number of at least 1, not 'seven'"),
])  # fmt: skip
def test_a_bad_backup_setting_is_refused_before_anything_runs(
    bundle: Bundle, setting: str, line: str
) -> None:
    bundle.doit("backup")
    made = sorted(bundle.backups.iterdir())
    run = bundle.doit("backup", setting, check=False)
    assert run.code != 0 and line in run.out and "Traceback" not in run.out
    assert sorted(bundle.backups.iterdir()) == made
