"""Data operations against faults where they hurt (bundled PostgreSQL, demo app): a restore never
prunes its own source; a backup from cron waits for a running restore and then holds the
restored state; a full disk during the pre-restore snapshot changes nothing; a restore starts
the image its backup names; a restore streams its dump (nothing staged, memory flat); env file
values compose would change are refused; secrets never enter the runtime image or its context."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from pathlib import Path

import docker
from helpers import (
    DATA_VOLUMES,
    Bundle,
    LocalBuild,
    big_data,
    data_state,
    databases,
    db_container,
    db_sql,
    doit_popen,
    http,
    live_values,
    project_volumes,
    restore_copying,
    wait_until,
)


def app_started(bundle: Bundle) -> list[str]:
    return [line for line in bundle.started().splitlines() if "orangescrum-db" not in line]


def change_after_backup(bundle: Bundle, name: str) -> None:
    assert http(bundle.port, "/api/actions", {"name": name})[0] == 201
    bundle.app_exec(f"echo {name} > /data/uploads/{name}.txt")


def test_a_restore_of_the_oldest_kept_snapshot_never_prunes_it(bundle: Bundle) -> None:
    keep = "backup_keep=1"  # the snapshot being restored is the only one kept of its kind
    change_after_backup(bundle, "snapshot-state")
    bundle.doit("backup", keep)
    bundle.doit("restore", "--confirm", keep)  # its pre-restore snapshot: the only one kept
    snapshot = next(p for p in bundle.backups.iterdir() if p.name.startswith("pre-restore-"))
    snapshot_state = json.loads((snapshot / "manifest.json").read_text())["database"]["tables"]
    run = bundle.doit("restore", "--from", snapshot.name, "--confirm", keep, check=False)
    assert run.code == 0 and "Traceback" not in run.out, run.out
    assert snapshot.is_dir()  # the source of the restore is still there
    rows = data_state(bundle)[0]
    assert rows.endswith("snapshot-state")
    assert live_values(bundle)["GENERATION"] == "2"
    count = db_sql(bundle, "SELECT count(*) FROM actions", live_values(bundle)["DB_NAME"])
    assert int(count) == snapshot_state["public.actions"]


def archive_listing(tar_path: Path) -> list[tuple[str, int, int, int, str]]:
    """A volume archive's members: name, mode, uid, size and content digest (no times)."""
    found = []
    with tarfile.open(tar_path) as tar:
        for member in tar:
            data = tar.extractfile(member) if member.isfile() else None
            digest = hashlib.sha256(data.read()).hexdigest() if data else member.linkname
            found.append((member.name, member.mode, member.uid, member.size, digest))
    return sorted(found)


def test_a_backup_from_cron_during_a_restore_waits_then_holds_the_restored_state(
    bundle: Bundle,
) -> None:
    big_data(bundle, upload_mb=20)
    bundle.doit("backup")
    source = bundle.latest()
    change_after_backup(bundle, "before-restore")
    restore = doit_popen(bundle, "restore", "--confirm")
    wait_until(lambda: restore_copying(bundle) or restore.poll() is not None, 300, "the COPY")
    assert restore.poll() is None
    cron = subprocess.Popen(
        [sys.executable, "-m", "tasks.cli.backup_volumes", "backup", "--dest", str(bundle.backups),
         "--project", bundle.project, "--env-file", "orangescrum-ee/.env.test-bundled"],
        cwd=bundle.ws.root, env={**os.environ, **bundle.env}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    restore_out = restore.communicate(timeout=600)[0]
    cron_out = cron.communicate(timeout=600)[0]
    assert restore.returncode == 0, restore_out
    assert cron.returncode == 0, cron_out
    assert "waiting for it to finish" in cron_out
    taken = bundle.latest()
    assert taken != source and source.is_dir()  # the restore's source was not pruned
    want = json.loads((source / "manifest.json").read_text())
    got = json.loads((taken / "manifest.json").read_text())
    assert got["database"]["tables"] == want["database"]["tables"]  # the restored database
    assert got["sequence"] > want["sequence"]
    for short in DATA_VOLUMES:  # and the restored volumes, every file
        rel = f"volumes/{short}.tar"
        if short == "app-files":  # the web server rewrites its state at each start
            continue
        assert archive_listing(taken / rel) == archive_listing(source / rel), short


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True)  # fmt: skip


def fill(path: Path) -> None:
    """Use up every byte left on the filesystem of `path`."""
    with (path / "filler").open("wb") as out:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def elsewhere(bundle: Bundle, backup_dir: Path) -> list[str]:
    """The bundle's settings with another backup folder."""
    kept = [s for s in bundle.settings if not s.startswith("backup_dir=")]
    return [*kept, f"backup_dir={backup_dir}"]


def test_a_full_disk_during_the_snapshot_changes_nothing(
    bundle: Bundle, engine: docker.DockerClient, tmp_path: Path
) -> None:
    bundle.app_exec("head -c 150000000 /dev/urandom > /data/uploads/big.bin")
    bundle.doit("backup")
    source = str(bundle.latest())
    change_after_backup(bundle, "after-backup")
    before, started = data_state(bundle), app_started(bundle)
    volumes, dbs = project_volumes(bundle.project), databases(bundle)
    # where the old code staged its dumps: the database container's /tmp, 1 MB
    pid = engine.containers.get(db_container(bundle)).attrs["State"]["Pid"]
    subprocess.run(["nsenter", "-t", str(pid), "-m", "mount", "-t", "tmpfs", "-o", "size=1m",
                    "tmpfs", "/tmp"], check=True)  # fmt: skip
    small, roomy = tmp_path / "small", tmp_path / "roomy"
    mount_tmpfs(small, "4m")
    mount_tmpfs(roomy, "220m")
    try:
        refused = bundle.ws.doit(
            "restore", "--from", source, "--confirm", *elsewhere(bundle, small), env=bundle.env,
            check=False,
        )  # fmt: skip
        assert refused.code != 0 and "not enough space for the snapshot" in refused.out
        assert "Traceback" not in refused.out
        proc = subprocess.Popen(
            [sys.executable, "-m", "doit", "restore", "--from", source, "--confirm",
             *elsewhere(bundle, roomy)],
            cwd=bundle.ws.root, env={**os.environ, **bundle.env}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        wait_until(lambda: any(roomy.glob(".partial-*/database.dump")) or proc.poll() is not None,
                   120, "the snapshot's dump")  # fmt: skip
        fill(roomy)
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode != 0 and "Traceback" not in out, out
        assert f"cannot write into {roomy}" in out and "No space left on device" in out
        assert list(roomy.glob(".partial-*")) == [] and not any(roomy.glob("pre-restore-*"))
    finally:
        subprocess.run(["umount", str(small)], check=False)
        subprocess.run(["umount", str(roomy)], check=False)
    assert data_state(bundle) == before and app_started(bundle) == started
    assert project_volumes(bundle.project) == volumes and databases(bundle) == dbs
    assert live_values(bundle) == {}
    staged = subprocess.run(["docker", "exec", db_container(bundle), "ls", "-A", "/tmp"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert staged == ""
    assert http(bundle.port, "/home/healthcheck")[0] == 200


def test_a_restore_starts_the_image_its_backup_names(
    bundle: Bundle, engine: docker.DockerClient, upgrade_image: str
) -> None:
    def running_image() -> str:
        found = engine.containers.get(
            bundle.compose_run("ps", "-q", "orangescrum-app").stdout.strip()
        )
        return str(found.attrs["Image"])

    app_image = running_image()
    bundle.doit("backup")
    assert json.loads((bundle.latest() / "manifest.json").read_text())["images"]["app"] == (
        app_image
    )
    # an upgrade: the next version migrates the database; its image becomes runtime:latest
    repo = f"durango-test-{uuid.uuid4().hex[:8]}-runtime"
    upgraded = engine.images.get(upgrade_image)
    upgraded.tag(repo, "latest")
    try:
        env = {**os.environ, **bundle.env, "APP_IMAGE": f"{repo}:latest"}
        subprocess.run([*bundle.compose, "up", "-d", "--wait", "orangescrum-app"], env=env,
                       check=True, capture_output=True)  # fmt: skip
        assert db_sql(bundle, "SELECT count(*) FROM phinxlog", "orangescrum_test") == "4"
        bundle.doit("restore", "--confirm", f"runtime_image={repo}")
        assert running_image() == app_image  # the backup's, not latest
        assert live_values(bundle)["APP_IMAGE"] == app_image
        database = live_values(bundle)["DB_NAME"]
        assert db_sql(bundle, "SELECT count(*) FROM phinxlog", database) == "3"
        marker = db_sql(bundle, "SELECT to_regclass('upgrade_marker') IS NULL", database)
        assert marker == "t"  # the upgrade's migration did not run again
    finally:
        engine.images.remove(f"{repo}:latest")


def test_a_restore_streams_its_dump_and_stages_nothing(bundle: Bundle) -> None:
    words = " || ".join(["md5(random()::text)"] * 8)  # hardly compressible
    bundle.sql(f"CREATE TABLE padding AS SELECT g, {words} AS t FROM generate_series(1, 800000) g")
    bundle.doit("backup")
    dump_size = (bundle.latest() / "database.dump").stat().st_size
    assert dump_size > 100e6
    proc = doit_popen(bundle, "restore", "--confirm")
    peak = [0]
    staged: list[str] = []

    def sample() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                rss = next(line for line in status.read_text().splitlines()
                           if line.startswith("VmRSS:"))  # fmt: skip
            except (OSError, StopIteration):
                break
            peak[0] = max(peak[0], int(rss.split()[1]) * 1024)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wait_until(lambda: restore_copying(bundle) or proc.poll() is not None, 300, "the COPY")
    staged = subprocess.run(
        ["docker", "exec", db_container(bundle), "find", "/tmp", "/var/tmp", "-type", "f",
         "-size", "+1024k"], capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    out = proc.communicate(timeout=600)[0]
    sampler.join()
    assert proc.returncode == 0, out
    assert staged == []  # no dump, no SQL beside the database's files
    assert peak[0] < dump_size / 2, (
        f"doit held {peak[0] / 1e6:.0f} MB for a {dump_size / 1e6:.0f} MB dump"
    )
    rows = db_sql(bundle, "SELECT count(*) FROM padding", live_values(bundle)["DB_NAME"])
    assert rows == "800000"


def test_a_dollar_in_an_env_file_value_is_refused_before_compose_runs(
    local_build: LocalBuild,
) -> None:
    ws = local_build.workspace
    env_path = ws.root / "orangescrum-ee" / ".env.test-dollar"
    base = (ws.root / "orangescrum-ee" / ".env.test-bundled").read_text()
    env_path.write_text(base.replace("DB_PASSWORD=test-only-3f9a1c", "DB_PASSWORD=pa$word"))
    project = f"durango-test-{uuid.uuid4().hex[:8]}"
    try:
        settings = ["env_file=orangescrum-ee/.env.test-dollar", f"compose_project={project}"]
        run = ws.doit("up", *settings, check=False)
        assert run.code != 0 and "the value of DB_PASSWORD contains `$`" in run.out, run.out
        assert "Traceback" not in run.out
        made = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert made == "" and project_volumes(project) == set()
    finally:
        env_path.unlink()


CANARY = f"canary-{uuid.uuid4().hex}"
CONTEXT = """
import sys
from pathlib import Path
from tasks.build import runtime
from tasks.core.pipeline import Pipeline
from tasks.core.settings import load_settings
from tasks.engine.containers import Containers
from tasks.engine.images import Engine

engine = Engine()
pipe = Pipeline(load_settings(Path.cwd()), engine, Containers(engine))
with open(sys.argv[1], "wb") as out:
    runtime.inputs(pipe).write_context(out)
"""


def test_secrets_never_enter_the_runtime_context_its_labels_or_history(
    local_build: LocalBuild, tmp_path: Path
) -> None:
    ws = local_build.workspace
    bundle_dir = ws.root / "orangescrum-ee"
    planted = {
        bundle_dir / "tenants" / "zz-canary.env": f"DB_PASSWORD={CANARY}-tenant\n",
        bundle_dir / "tenants" / "server.env": f"DB_ADMIN_PASSWORD={CANARY}-admin\n",
        bundle_dir / "secrets" / "db_password": f"{CANARY}-secret\n",
    }
    made = [path for path in planted if not path.exists()]
    assert bundle_dir / "tenants" / "zz-canary.env" in made
    try:
        for path in made:
            path.parent.mkdir(exist_ok=True)
            path.write_text(planted[path])
        digests = [hashlib.sha256(path.read_bytes()).hexdigest() for path in made]
        assert "-- runtime" in ws.doit("runtime").out  # the key never saw them
        context = tmp_path / "context.tar"
        subprocess.run([sys.executable, "-c", CONTEXT, str(context)], cwd=ws.root, check=True)
        with tarfile.open(context) as tar:
            names = tar.getnames()
        data = context.read_bytes()
        image = local_build.runtime_image
        history = subprocess.run(["docker", "history", "--no-trunc", image],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        inspect = subprocess.run(["docker", "image", "inspect", image],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        for text in (data.decode(errors="replace"), history, inspect):
            assert CANARY not in text
            assert not any(digest in text for digest in digests)
        assert not any(n.startswith(("tenants", "secrets", ".env")) for n in names), names
    finally:
        for path in made:
            path.unlink()
