"""Restores and backups under faults (bundled PostgreSQL, demo app): a refused restore changes
nothing and leaves the app running; a restore killed part-way (the doit process, or the
PostgreSQL server) leaves the database whole, old or new, and the rollback command it printed
brings back exactly what was there; concurrent backups stay private and complete; restored
files keep their owners and modes and the app can write every volume again."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import docker
import pytest
from helpers import Bundle, Writer, http

VOLUMES = ["/data/uploads", "/data/logs", "/data/files", "/data/sessions"]


def state(bundle: Bundle) -> tuple[str, str]:
    """What must come back exactly: the rows of actions, and every uploaded file's sha256."""
    return bundle.sql("SELECT string_agg(name, ',' ORDER BY id) FROM actions"), bundle.uploads()


def add_after_backup(bundle: Bundle) -> None:
    assert http(bundle.port, "/api/actions", {"name": "after-backup"})[0] == 201
    bundle.app_exec("echo fresh > /data/uploads/fresh.txt")


def rewrite_manifest(folder: Path, change: object) -> None:
    path = folder / "manifest.json"
    path.chmod(0o600)
    manifest = json.loads(path.read_text())
    change(manifest)  # type: ignore[operator]
    path.write_text(json.dumps(manifest))


def unsafe_archive(folder: Path) -> None:
    """A volume archive with a FIFO and a path outside the volume, its checksum updated (a
    manifest someone edited to match)."""
    tar_path = folder / "volumes" / "app-uploads.tar"
    with tarfile.open(tar_path, "a") as tar:
        fifo = tarfile.TarInfo("volume/pipe")
        fifo.type = tarfile.FIFOTYPE
        tar.addfile(fifo)
        outside = tarfile.TarInfo("volume/../etc/evil")
        outside.size = 4
        tar.addfile(outside, io.BytesIO(b"evil"))
    digest = hashlib.sha256(tar_path.read_bytes()).hexdigest()

    def update(manifest: dict) -> None:
        manifest["files"]["volumes/app-uploads.tar"] = {
            "sha256": digest,
            "size": tar_path.stat().st_size,
        }

    rewrite_manifest(folder, update)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("no drop consent", "the database is not empty"),
        ("tampered volume archive", "volumes/app-uploads.tar does not match its checksum"),
        ("unsafe archive members", "app-uploads.tar: volume/pipe is a device or FIFO"),
        ("manifest naming db-data", "the backup names volume(s) db-data"),
        ("missing helper image", "is not on this engine"),
    ],
)
def test_a_refused_restore_changes_nothing_and_the_app_keeps_running(
    bundle: Bundle, fault: str, message: str
) -> None:
    bundle.doit("backup")
    folder = bundle.latest()
    add_after_backup(bundle)
    before, running_before = state(bundle), bundle.started()
    args = ["restore", "--confirm", "--drop-database"]
    if fault == "no drop consent":
        args.remove("--drop-database")
    elif fault == "tampered volume archive":
        tar = folder / "volumes" / "app-uploads.tar"
        data = bytearray(tar.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tar.write_bytes(bytes(data))
    elif fault == "unsafe archive members":
        unsafe_archive(folder)
    elif fault == "manifest naming db-data":
        rewrite_manifest(
            folder,
            lambda m: m["volumes"].__setitem__(
                "db-data", {"name": "x_db-data", "file": "volumes/app-uploads.tar"}
            ),
        )
    else:
        rewrite_manifest(folder, lambda m: m["images"].__setitem__("app", "sha256:" + "0" * 64))
    run = bundle.doit(*args, check=False)
    assert run.code != 0 and message in run.out, run.out
    assert "Traceback" not in run.out
    assert state(bundle) == before
    assert bundle.started() == running_before  # never stopped
    assert http(bundle.port, "/home/healthcheck")[0] == 200


def big_state(bundle: Bundle) -> None:
    """Enough data that each phase of a restore takes seconds, so a kill lands inside it."""
    bundle.sql(
        "CREATE TABLE padding AS SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 8) AS t "
        "FROM generate_series(1, 400000) g"
    )
    bundle.app_exec("head -c 150000000 /dev/urandom > /data/uploads/big.bin")


def db_pid(bundle: Bundle, engine: docker.DockerClient) -> int:
    name = bundle.compose_run("ps", "-q", "orangescrum-db").stdout.strip()
    return int(engine.containers.get(name).attrs["State"]["Pid"])


def wait_db(bundle: Bundle, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while bundle.compose_run("exec", "-T", "orangescrum-db", "pg_isready", check=False).returncode:
        assert time.monotonic() < deadline, "the database did not come back"
        time.sleep(1)
    busy = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE query LIKE '%COPY%' AND pid <> pg_backend_pid()"
    )
    while bundle.sql(busy) not in ("0", ""):
        assert time.monotonic() < deadline, "a restore kept running"
        time.sleep(1)


@pytest.mark.parametrize("point", ["snapshot", "database", "volumes", "postgres server"])
def test_a_killed_restore_leaves_a_whole_database_and_a_rollback_that_works(
    bundle: Bundle, engine: docker.DockerClient, point: str
) -> None:
    big_state(bundle)
    bundle.doit("backup")
    backed_up = state(bundle)
    add_after_backup(bundle)
    old = state(bundle)
    proc = subprocess.Popen(
        [sys.executable, "-m", "doit", "restore", "--confirm", "--drop-database", *bundle.settings],
        cwd=bundle.ws.root,
        env={**os.environ, **bundle.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    trigger = {
        "snapshot": "restore: stopped",
        "database": "restore: database (one transaction)",
        "volumes": "restore: volume app-sessions",
        "postgres server": "restore: database (one transaction)",
    }[point]
    out = []
    for line in proc.stdout:
        out.append(line)
        if trigger in line:
            break
    time.sleep(0.5)
    if point == "postgres server":
        os.kill(db_pid(bundle, engine), signal.SIGKILL)
        out.append(proc.communicate(timeout=300)[0])
        assert proc.returncode != 0
    else:
        proc.kill()
        proc.wait()
    text = "".join(out)
    wait_db(bundle)
    rows = state(bundle)[0]
    assert rows in (old[0], backed_up[0]), f"the database is neither old nor restored: {rows}"
    rollback = re.search(r"roll back with: doit restore --from (\S+) --confirm", text)
    if point == "snapshot":
        assert rollback is None and rows == old[0]  # nothing was changed yet
        bundle.doit("up")
        assert state(bundle) == old
        return
    assert rollback, text
    bundle.doit("restore", "--from", rollback.group(1), "--confirm", "--drop-database")
    assert state(bundle) == old
    assert http(bundle.port, "/home/healthcheck")[0] == 200


def test_concurrent_backups_under_a_writer_are_private_and_complete(bundle: Bundle) -> None:
    bundle.app_exec("head -c 50000000 /dev/urandom > /data/uploads/big.bin")
    writer = Writer(bundle.port)
    writer.start()
    exposed: list[str] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            for path in (
                [bundle.backups, *bundle.backups.rglob("*")] if bundle.backups.exists() else []
            ):
                try:
                    if not path.is_symlink() and path.stat().st_mode & 0o077:
                        exposed.append(f"{path} {oct(path.stat().st_mode)}")
                except FileNotFoundError:
                    continue
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        first = bundle.ws.popen("backup", *bundle.settings)
        time.sleep(0.5)
        second = subprocess.run(
            [sys.executable, "-m", "tasks.cli.backup_volumes", "backup", "--dest", str(bundle.backups),
             "--project", bundle.project, "--env-file", "orangescrum-ee/.env.test-bundled"],
            cwd=bundle.ws.root, env={**os.environ, **bundle.env}, capture_output=True, text=True,
        )  # fmt: skip
        first_out = first.communicate(timeout=300)[0]
    finally:
        sampling.set()
        writer.stop.set()
        writer.join()
        sampler.join()
    assert first.returncode == 0, first_out
    assert second.returncode == 0 or "waiting" in second.stdout, second.stdout + second.stderr
    assert exposed == []
    assert list(bundle.backups.glob(".partial-*")) == []
    complete = [p for p in bundle.backups.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(complete) == 2
    for folder in complete:
        assert json.loads((folder / "manifest.json").read_text())["tool"] == "durango-backup/1"


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
