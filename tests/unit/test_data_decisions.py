"""The decisions of backups, restores and their generations, against fake engines: retention by
sequence (whatever the clock does), files on disk before anything older goes, a restore's
refusals before it changes anything, what a leftover prepare needs, where space runs short,
which images prune keeps. Milliseconds each."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fakes import FakeContainers, FakeImages

from tasks.core.errors import BackupError, DurangoError
from tasks.core.pipeline import Pipeline
from tasks.core.ports import ImageInfo, Service, Streamed
from tasks.core.settings import load_settings
from tasks.deploy import backup, generations, live, prune, restore
from tasks.deploy.generations import Generation, Preparing
from tasks.formats import backup_manifest
from tasks.formats import releases as releases_format

IMAGE = "sha256:" + "c" * 64
ENV = "DB_HOST=orangescrum-db\nDB_NAME=app\nDB_USERNAME=app\nDB_PASSWORD=pw\n"


def pipeline(tmp_path: Path, containers: FakeContainers, **extra: str) -> Pipeline:
    (tmp_path / "orangescrum-ee").mkdir(exist_ok=True)
    (tmp_path / "orangescrum-ee" / ".env").write_text(ENV)
    values = {"compose_project": "demo", "backup_dir": str(tmp_path / "backups"), **extra}
    settings = load_settings(tmp_path, values, {})
    return Pipeline(settings, FakeImages({IMAGE: ImageInfo(IMAGE)}), containers)


class Bundled(FakeContainers):
    """A running bundle whose database answers the commands a backup runs."""

    def exec_stream(
        self,
        container_id: str,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str = "",
        stdin: Path | bytes | None = None,
        stdout: Path | None = None,
    ) -> Streamed:
        self.calls.append("exec_stream")
        text = {
            "pg_dump --version": "pg_dump (PostgreSQL) 15.18",
            "pg_restore -l": ";     Dumped by pg_dump version: 15.18\n1; 1259 1 TABLE public t u\n",
        }.get(" ".join(cmd[:2]), "")
        if cmd[0] == "pg_dump" and stdout is not None:
            stdout.write_bytes(b"PGDMP-dump")
            return Streamed(0, b"", hashlib.sha256(b"PGDMP-dump").hexdigest(), 10, "")
        if cmd[0] == "psql":
            query = stdin.decode() if isinstance(stdin, bytes) else ""
            text = "150000" if "server_version_num" in query else "4096"
        if cmd[0] == "sh" and "pg_restore -f -" in cmd[2]:
            text = "rows public.t 1\nexit 0\n"
        return Streamed(0, text.encode(), "", 0, "")

    def archive_out(self, container_id: str, path: str, dest: Path) -> tuple[str, int]:
        packed = io.BytesIO()
        with tarfile.open(fileobj=packed, mode="w") as tar:
            info = tarfile.TarInfo("volume")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        dest.write_bytes(packed.getvalue())
        return hashlib.sha256(packed.getvalue()).hexdigest(), len(packed.getvalue())


def running_bundle() -> Bundled:
    return Bundled(
        running=[
            Service("db", "demo-db-1", "orangescrum-db", IMAGE, True, ("POSTGRES_USER=app",)),
            Service("app", "demo-app-1", "orangescrum-app", IMAGE, True),
        ],
        volume_names={"demo_app-uploads_g3": "app-uploads"},
    )


# --- retention: by sequence, after the new backup is on disk -----------------------------------


def test_a_stepped_back_clock_never_makes_a_new_backup_prune_itself(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, running_bundle(), backup_keep="1")
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    pipe.clock = lambda: now
    first = backup.take(pipe)
    pipe.clock = lambda: now - timedelta(days=365)  # the clock steps back a year
    second = backup.take(pipe)
    assert second.name < first.name  # by name the new one looks older...
    assert not first.exists() and second.exists()  # ...by sequence it is the newest: kept
    assert (pipe.settings.backup_dir / "latest").resolve() == second
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["sequence"] == 2


def test_files_and_folders_are_on_disk_before_an_older_backup_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = pipeline(tmp_path, running_bundle(), backup_keep="1")
    backup.take(pipe)
    events: list[str] = []
    real_rename, real_rmtree = os.rename, backup.shutil.rmtree

    def rename(a: Path, b: Path) -> None:
        events.append("rename")
        real_rename(a, b)

    def rmtree(path: Path) -> None:
        events.append("remove old")
        real_rmtree(path)

    monkeypatch.setattr(backup, "fsync_tree", lambda p: events.append(f"fsync tree {p.name}"))
    monkeypatch.setattr(backup, "fsync_dir", lambda p: events.append(f"fsync dir {p.name}"))
    monkeypatch.setattr(backup.os, "rename", rename)
    monkeypatch.setattr(backup.shutil, "rmtree", rmtree)
    backup.take(pipe)
    assert events.index("remove old") > events.index("rename")
    first_fsync = next(i for i, e in enumerate(events) if e.startswith("fsync tree .partial"))
    assert first_fsync < events.index("rename") < events.index("fsync dir backups")
    assert events.index("fsync dir backups") < events.index("remove old")


def test_retention_never_removes_a_protected_backup() -> None:
    a, b, c = Path("/b/a"), Path("/b/b"), Path("/b/c")
    assert backup.to_prune([a, b, c], 2, set()) == [a]
    assert backup.to_prune([a, b, c], 2, {a, c}) == [b]
    assert backup.to_prune([a, c], 1, {a, c}) == []  # one more than keep, never the source


def test_the_restore_source_survives_its_own_snapshot(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, running_bundle(), backup_keep="1")
    first = backup.take(pipe, backup.PRE_RESTORE)
    second = backup.take(pipe, backup.PRE_RESTORE, protect=first)
    assert first.exists() and second.exists()
    third = backup.take(pipe, backup.PRE_RESTORE)
    assert not first.exists() and not second.exists() and third.exists()


# --- a restore's refusals come before any change -----------------------------------------------


def write_backup(folder: Path, **change: object) -> Path:
    """A complete backup folder (checksums right) whose manifest `change` edits."""
    (folder / "volumes").mkdir(parents=True)
    (folder / "database.dump").write_bytes(b"dump")
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as tar:
        info = tarfile.TarInfo("volume")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    (folder / "volumes" / "app-uploads.tar").write_bytes(packed.getvalue())

    def entry(rel: str) -> dict[str, object]:
        data = (folder / rel).read_bytes()
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    data: dict[str, object] = {
        "tool": backup_manifest.TOOL, "project": "demo", "kind": "backup", "sequence": 1,
        "created": "2030-01-01T00:00:00+00:00", "generation": 0,
        "database": {"bundled": True, "name": "app", "dump_started": "", "pg_dump": "15.18",
                     "server": "15.18", "size": 1, "schemas": ["public"], "tables": {}},
        "volumes": {"app-uploads": {"name": "x", "file": "volumes/app-uploads.tar",
                                    "entries": 1, "bytes": 0}},
        "images": {"app": IMAGE}, "source_commit": None,
        "files": {"database.dump": entry("database.dump"),
                  "volumes/app-uploads.tar": entry("volumes/app-uploads.tar")},
    }  # fmt: skip
    data.update(change)
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(
    ("change", "confirm", "words"),
    [
        ({"project": "someone-else"}, True, "the backup is of project someone-else, not demo"),
        (
            {
                "volumes": {
                    "db-data": {
                        "name": "x",
                        "file": "volumes/app-uploads.tar",
                        "entries": 1,
                        "bytes": 0,
                    }
                }
            },
            True,
            "names volume(s) db-data",
        ),
        ({}, False, "run again with --confirm"),
        ({"images": {"app": "sha256:" + "0" * 64}}, True, "is not on this engine"),
        (
            {
                "volumes": {
                    "app-uploads": {
                        "name": "x",
                        "file": "volumes/app-uploads.tar",
                        "entries": 5,
                        "bytes": 0,
                    }
                }
            },
            True,
            "does not hold what",
        ),
    ],
)
def test_a_refused_restore_calls_nothing_that_changes_anything(
    tmp_path: Path, change: dict[str, object], confirm: bool, words: str
) -> None:
    containers = running_bundle()
    containers.present_images = {IMAGE}
    pipe = pipeline(tmp_path, containers)
    folder = write_backup(pipe.settings.backup_dir / "one", **change)
    with pytest.raises(BackupError, match=words.replace("(", r"\(").replace(")", r"\)")):
        restore._restore(pipe, str(folder), confirm)
    assert containers.changed() == []


def test_a_manifest_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, running_bundle())
    outside = tmp_path / "evil.tar"
    outside.write_bytes(b"")
    folder = write_backup(pipe.settings.backup_dir / "one")
    data = json.loads((folder / "manifest.json").read_text())
    data["volumes"]["app-uploads"]["file"] = str(outside)
    data["files"][str(outside)] = {"sha256": hashlib.sha256(b"").hexdigest(), "size": 0}
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BackupError, match="is not inside the backup folder"):
        backup.verify(folder)


# --- generations -----------------------------------------------------------------------------


def test_a_leftover_prepare_is_finished_or_discarded_by_the_live_file() -> None:
    prepared = Preparing(3, "app_g3", ["demo_app-uploads_g3"])
    assert generations.recovery(None, 2) == ""
    assert generations.recovery(prepared, 3) == "finish"  # committed, record missing
    assert generations.recovery(prepared, 2) == "discard"  # never switched to


def test_a_generation_number_is_never_reused(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, running_bundle())
    generations.save(pipe, Generation(2, "app_g2", {}, IMAGE))
    generations.begin(pipe, Preparing(4, "app_g4"))
    assert generations.next_number(pipe, {"demo_app-uploads_g7", "other_app-uploads_g9"}) == 8
    assert generations.next_number(pipe, set()) == 5


def test_the_live_values_name_every_switched_volume_and_the_image() -> None:
    gen = Generation(1, "app_g1", {"app-uploads": "demo_app-uploads_g1", "extra": "x"}, IMAGE)
    assert gen.live_values() == {
        "GENERATION": "1", "DB_NAME": "app_g1", "APP_IMAGE": IMAGE,
        "VOLUME_APP_UPLOADS": "demo_app-uploads_g1",
    }  # fmt: skip


def test_the_switch_starts_again_what_it_stopped_when_the_commit_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    containers = running_bundle()
    pipe = pipeline(tmp_path, containers)

    def full_disk(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(live, "write", full_disk)
    with pytest.raises(OSError):
        generations.switch(pipe, Generation(1, "app_g1", {}, IMAGE))
    assert containers.calls[-2:] == ["stop", "start"]


def test_the_switch_goes_back_when_the_app_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = pipeline(tmp_path, running_bundle())
    live.write(pipe, {"GENERATION": "0", "DB_NAME": "app"})
    started: list[str] = []

    def start_on(p: Pipeline, names: list[str]) -> None:
        started.append(live.read(p)["DB_NAME"])
        if len(started) == 1:
            raise DurangoError("unhealthy")

    monkeypatch.setattr(generations, "start_on", start_on)
    with pytest.raises(BackupError, match="switched back"):
        generations.switch(pipe, Generation(1, "app_g1", {}, IMAGE))
    assert started == ["app_g1", "app"] and live.read(pipe)["DB_NAME"] == "app"


def test_space_is_short_only_where_it_is_known_to_be() -> None:
    needs = [("backups", 100, 105), ("server", 100, None), ("volumes", 10, 1000)]
    assert restore.shortfalls(needs) == ["backups has 0 MB free, needs 0 MB"]
    assert restore.shortfalls([("volumes", 10, 1000)]) == []


# --- prune keeps the images a restore or a switch back needs ---------------------------------


def test_prune_keeps_images_of_backups_tenants_backups_and_generations(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, running_bundle())
    own = write_backup(pipe.settings.backup_dir / "one", images={"app": "sha256:" + "1" * 64})
    tenant = tmp_path / "backups" / "acme" / "t1"
    write_backup(tenant, images={"app": "sha256:" + "2" * 64})
    generations.save(pipe, Generation(1, "app_g1", {}, "sha256:" + "3" * 64))
    live.write(pipe, {"APP_IMAGE": "sha256:" + "4" * 64})
    found = prune.named_images(pipe)
    assert {"sha256:" + d * 64 for d in "1234"} <= found
    assert own.exists()


class ManyRuntimes(FakeContainers):
    """Five old runtime images (r1 oldest) besides the one latest names."""

    def images_named(self, repository: str) -> list[ImageInfo]:
        if repository != "orangescrum-ee":  # the runtime image's default name
            return []
        latest = ImageInfo("sha256:" + "9" * 64, (f"{repository}:latest",))
        old = [ImageInfo(f"sha256:{n}" + "0" * 63, (f"{repository}:r{n}",)) for n in "54321"]
        return [latest, *old]


def test_prune_keeps_the_images_a_rollback_can_go_back_to(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, ManyRuntimes(), keep_images="1", keep_releases="1")
    runtime = pipe.settings.runtime_image
    rel = releases_format.Release(
        key="r1", image=f"{runtime}:r1", image_id="", attempted="2026-01-01T00:00:00+00:00",
        deployed="2026-01-01T00:00:00+00:00", status=releases_format.RETIRED,
    )  # fmt: skip
    releases_format.save(
        tmp_path / ".durango" / "releases" / "demo.json", releases_format.Records("demo", (rel,))
    )
    remove, _ = prune.plan(pipe, pipe.containers)
    removed = {tag for image in remove for tag in image.tags}
    # keep_images=1 keeps r5; the oldest, r1, stays only because a rollback can go back to it
    assert removed == {f"{runtime}:r{n}" for n in "432"}
