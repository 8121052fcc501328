"""Backups of a running bundle (bundled PostgreSQL, demo app): consistent while writes go on, read
back in full before they count, never looking complete when interrupted, pruned to the newest N
by their sequence (not the clock), one at a time per project, of the database DB_HOST names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

from helpers import (
    DB,
    POSTGRES,
    Bundle,
    Writer,
    big_data,
    ctrl_c_as_from_a_terminal,
    data_state,
    db_container,
    db_sql,
    free_port,
    http,
    wait_ready_db,
    wait_until,
)


def test_backup_while_writing_then_restore_after_volumes_are_destroyed(bundle: Bundle) -> None:
    bundle.app_exec(
        "head -c 3000000 /dev/urandom > /data/uploads/photo.bin && echo note > /data/uploads/n.txt"
    )
    hashes_before = bundle.app_exec("cd /data/uploads && sha256sum photo.bin n.txt")
    writer = Writer(bundle.port)
    writer.start()
    wait_until(lambda: len(writer.committed) >= 3, 120, "the writer's first rows")
    bundle.doit("backup")
    writer.stop.set()
    writer.join()
    manifest = json.loads((bundle.latest() / "manifest.json").read_text())
    dump_started = datetime.fromisoformat(manifest["database"]["dump_started"])
    before_dump = {name for name, at in writer.committed if at < dump_started}
    assert before_dump, f"nothing committed before {dump_started}: {writer.committed[:3]}"
    assert "db-data" not in manifest["volumes"] and "app-uploads" in manifest["volumes"]
    for path in bundle.latest().rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"

    bundle.compose_run("down", "--volumes")
    refused = bundle.doit("restore", check=False)
    assert refused.code != 0 and "run again with --confirm" in refused.out
    bundle.doit("restore", "--confirm")

    status, body = http(bundle.port, "/api/actions")
    assert status == 200
    names = {row["name"] for row in json.loads(body)}
    assert before_dump <= names
    assert len(names) == manifest["database"]["tables"]["public.actions"]
    assert bundle.app_exec("cd /data/uploads && sha256sum photo.bin n.txt") == hashes_before
    assert http(bundle.port, "/home/healthcheck")[0] == 200
    logs = bundle.compose_run("logs", "orangescrum-app").stdout
    assert "Database seeding: skipped" in logs and "Database seeding: done" not in logs


def test_a_damaged_backup_is_refused_naming_the_file(bundle: Bundle) -> None:
    bundle.doit("backup")
    tar = bundle.latest() / "volumes" / "app-uploads.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tar.write_bytes(bytes(data))

    run = bundle.doit("restore", "--confirm", check=False)
    assert run.code != 0
    assert "volumes/app-uploads.tar does not match its checksum" in run.out
    listing = bundle.doit("backups").out
    assert "DAMAGED" in listing


def test_an_interrupted_backup_never_becomes_latest(bundle: Bundle) -> None:
    bundle.doit("backup")
    good = bundle.latest()
    bundle.app_exec("head -c 400000000 /dev/zero > /data/uploads/big.bin")
    proc = subprocess.Popen(
        [sys.executable, "-m", "doit", "backup", *bundle.settings],
        cwd=bundle.ws.root,
        env={**os.environ, **bundle.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ctrl_c_as_from_a_terminal,
    )
    deadline = time.monotonic() + 60
    while not list(bundle.backups.glob(".partial-*/volumes/app-uploads.tar")):
        assert time.monotonic() < deadline and proc.poll() is None, "backup ended too soon"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    assert bundle.latest() == good
    assert [p.name for p in bundle.backups.iterdir() if p.name.startswith(".partial")] == []


def test_retention_keeps_the_newest_and_only_touches_its_own_folders(bundle: Bundle) -> None:
    foreign = bundle.backups / "operator-notes"
    foreign.mkdir(parents=True)
    made = []
    for _ in range(3):
        bundle.doit("backup", "backup_keep=2")
        made.append(bundle.latest().name)
    kept = sorted(p.name for p in bundle.backups.iterdir() if p.is_dir() and not p.is_symlink())
    assert kept == sorted([*made[1:], "operator-notes"])


def test_retention_goes_by_sequence_when_the_clock_steps_back(bundle: Bundle) -> None:
    bundle.doit("backup")
    # That backup was taken while the clock ran a year ahead: its name is in the future.
    first = bundle.latest()
    ahead = first.with_name(f"{int(first.name[:4]) + 1}{first.name[4:]}")
    first.rename(ahead)
    (bundle.backups / "latest").unlink()
    (bundle.backups / "latest").symlink_to(ahead.name)
    bundle.doit("backup", "backup_keep=1")
    newest = bundle.latest()
    assert newest.is_dir() and newest.name < ahead.name  # the new one, despite its name
    assert not ahead.exists()
    assert json.loads((newest / "manifest.json").read_text())["sequence"] == 2


def full_read(dump: Path, table: str) -> tuple[int, int]:
    """(pg_restore's exit status reading the whole dump, the data lines of `table`'s COPY),
    by a PostgreSQL 15 client of its own."""
    awk = f"/^COPY {table} /{{c=1;next}} c&&/^\\\\.$/{{print n+0; exit}} c{{n++}}"
    script = (
        "pg_restore -f /dev/null /d/database.dump; echo $?; "
        f"pg_restore -f - /d/database.dump | awk '{awk}'"
    )
    done = subprocess.run(
        ["docker", "run", "--rm", "--user", "0", "--entrypoint", "sh", "-v", f"{dump.parent}:/d:ro",
         POSTGRES,
         "-c", script],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    status, rows = [*done.stdout.split(), "", ""][:2]
    return int(status), int(rows or -1)


def test_two_backups_at_once_are_each_whole(bundle: Bundle) -> None:
    big_data(bundle, rows=600000, upload_mb=1)
    first = bundle.ws.popen("backup", *bundle.settings)

    def dumping() -> bool:
        query = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY % TO stdout%'"
        return db_sql(bundle, query) not in ("0", "")

    wait_until(lambda: dumping() or first.poll() is not None, 120, "the first backup's dump")
    assert first.poll() is None
    cron = subprocess.run(
        [sys.executable, "-m", "tasks.cli.backup_volumes", "backup", "--dest", str(bundle.backups),
         "--project",
         bundle.project, "--env-file", "orangescrum-ee/.env.test-bundled"],
        cwd=bundle.ws.root, env={**os.environ, **bundle.env}, capture_output=True, text=True,
    )  # fmt: skip
    first_out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, first_out
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert "waiting for it to finish" in cron.stderr  # one at a time, and it says so
    folders = sorted(p for p in bundle.backups.iterdir() if p.is_dir() and not p.is_symlink())
    assert len(folders) == 2
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["database"]["tables"]["public.padding"] == 600000
        assert full_read(folder / "database.dump", "public.padding") == (0, 600000)
    leftovers = subprocess.run(
        ["docker", "exec", db_container(bundle), "sh", "-c", "ls /tmp | grep -c durango || true"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert leftovers == "0"


def test_a_bundle_moved_to_an_external_server_backs_up_that_server(bundle: Bundle) -> None:
    bundle.sql("INSERT INTO actions (name) VALUES ('stale-only')")  # the old bundled database
    port = free_port()
    name = f"durango-test-external-{uuid.uuid4().hex[:8]}"
    external = bundle.ws.engine.containers.run(
        POSTGRES, detach=True, name=name, ports={"5432/tcp": ("0.0.0.0", port)},
        environment={"POSTGRES_USER": DB["user"], "POSTGRES_PASSWORD": DB["password"],
                     "POSTGRES_DB": DB["name"]},
    )  # fmt: skip
    try:
        wait_ready_db(external)
        code, out = external.exec_run(
            ["psql", "-U", DB["user"], "-d", DB["name"], "-c",
             "CREATE TABLE moved (marker text); INSERT INTO moved VALUES ('external-only')"]
        )  # fmt: skip
        assert code == 0, out
        bundled_env = bundle.ws.root / "orangescrum-ee" / ".env.test-bundled"
        moved_env = bundled_env.with_name(".env.test-moved")
        text = bundled_env.read_text().replace("DB_PORT=5432", f"DB_PORT={port}")
        moved_env.write_text(text.replace("DB_HOST=orangescrum-db", "DB_HOST=host.docker.internal"))
        settings = [s for s in bundle.settings if not s.startswith("env_file=")]
        bundle.ws.doit("backup", *settings, "env_file=orangescrum-ee/.env.test-moved",
                       env=bundle.env)  # fmt: skip
        manifest = json.loads((bundle.latest() / "manifest.json").read_text())
        assert manifest["database"]["bundled"] is False
        assert manifest["database"]["tables"] == {"public.moved": 1}  # that server's, whole
    finally:
        external.remove(force=True, v=True)
    assert data_state(bundle)[0].endswith("stale-only")  # the old one left as it was
