"""Backups of a running bundle (bundled PostgreSQL, demo app): consistent while writes go on,
verified before restore, never looking complete when interrupted, pruned to the newest N."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

from helpers import Bundle, Writer, ctrl_c_as_from_a_terminal, http


def test_backup_while_writing_then_restore_after_volumes_are_destroyed(bundle: Bundle) -> None:
    bundle.app_exec(
        "head -c 3000000 /dev/urandom > /data/uploads/photo.bin && echo note > /data/uploads/n.txt"
    )
    hashes_before = bundle.app_exec("cd /data/uploads && sha256sum photo.bin n.txt")
    writer = Writer(bundle.port)
    writer.start()
    time.sleep(1)
    bundle.doit("backup")
    writer.stop.set()
    writer.join()
    manifest = json.loads((bundle.latest() / "manifest.json").read_text())
    dump_started = datetime.fromisoformat(manifest["database"]["dump_started"])
    before_dump = {name for name, at in writer.committed if at < dump_started}
    assert before_dump, "the writer committed nothing before the dump began"
    assert "db-data" not in manifest["volumes"] and "app-uploads" in manifest["volumes"]
    for path in bundle.latest().rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"

    subprocess.run(
        [*bundle.compose, "down", "--volumes"],
        env={**os.environ, **bundle.env},
        check=True,
        capture_output=True,
    )
    refused = bundle.doit("restore", check=False)
    assert refused.code != 0 and "run again with --confirm" in refused.out
    bundle.doit("restore", "--confirm")

    status, body = http(bundle.port, "/api/actions")
    assert status == 200
    names = {row["name"] for row in json.loads(body)}
    assert before_dump <= names
    assert bundle.app_exec("cd /data/uploads && sha256sum photo.bin n.txt") == hashes_before
    assert http(bundle.port, "/home/healthcheck")[0] == 200
    logs = subprocess.run(
        [*bundle.compose, "logs", "orangescrum-app"],
        capture_output=True,
        text=True,
        env={**os.environ, **bundle.env},
        check=True,
    ).stdout
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
    while not list(bundle.backups.glob(".partial-*/database.dump")):
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
