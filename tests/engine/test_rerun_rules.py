"""Each stage reruns when, and only when, something its build can read changed or its
artefact is gone. Every scenario runs the real pipeline on the real engine."""

from __future__ import annotations

import hashlib
import json
import subprocess

import docker
import pytest
from helpers import STAGES, Workspace, git, make_workspace, remove_images


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def labels(ws: Workspace, stage: str) -> dict[str, str]:
    return ws.engine.images.get(f"{ws.image(stage)}:latest").labels


def test_first_run_builds_every_stage_and_second_run_does_nothing(built: Workspace) -> None:
    again = built.doit()
    assert again.executed == []
    assert again.uptodate == STAGES

    head = git(built.app.path, "rev-parse", "HEAD")
    for stage in ("base", "embed", "runtime"):
        image = built.engine.images.get(f"{built.image(stage)}:latest")
        key = image.labels["io.durango.key"]
        assert f"{built.image(stage)}:{key[:12]}" in image.tags
        assert image.labels["org.opencontainers.image.revision"] == head
        assert image.labels["org.opencontainers.image.created"]
    assert built.binary.stat().st_mode & 0o111
    assert b"hello v1" in built.binary.read_bytes()
    assert (built.root / "package" / "webroot" / "index.php").read_text().startswith("<?php")


def test_app_commit_rebuilds_no_image_but_the_runtime(built: Workspace) -> None:
    """An app-only commit: the app is appended to the same base binary; base and embed (the
    dependencies) are untouched."""
    base_id = built.engine.images.get(f"{built.image('base')}:latest").id
    embed_id = built.engine.images.get(f"{built.image('embed')}:latest").id
    built.app.write("webroot/index.php", "<?php echo 'hello v2';\n")
    built.app.commit("v2")

    run = built.doit()

    assert run.executed == ["archive", "extract", "runtime"]
    assert run.uptodate == ["base", "embed"]
    assert built.engine.images.get(f"{built.image('base')}:latest").id == base_id
    assert built.engine.images.get(f"{built.image('embed')}:latest").id == embed_id
    assert b"hello v2" in built.binary.read_bytes()
    container_binary = built.engine.containers.run(
        f"{built.image('runtime')}:latest", ["cat", "/usr/local/bin/orangescrum-ee"], remove=True
    )
    assert b"hello v2" in container_binary


def test_base_dockerfile_comment_rebuilds_base_and_what_follows(built: Workspace) -> None:
    binary_before = sha256(built.binary)
    base_before = built.engine.images.get(f"{built.image('base')}:latest").id
    built.edit("builder/base-build.Dockerfile", "# a comment\n")

    run = built.doit()

    assert run.executed[:3] == ["base", "embed", "extract"]
    assert "archive" in run.uptodate
    assert built.engine.images.get(f"{built.image('base')}:latest").id != base_before
    # The comment changes no layer, so the relinked binary is byte-identical and the runtime
    # image, keyed on the binary's content, is rightly left alone.
    assert sha256(built.binary) == binary_before
    assert run.uptodate == ["archive", "runtime"]


def test_base_content_change_cascades_to_runtime(built: Workspace) -> None:
    runtime_before = built.engine.images.get(f"{built.image('runtime')}:latest").id
    (built.root / "builder" / "base-tool.txt").write_text("base tool v2\n")

    run = built.doit()

    assert run.executed == ["base", "embed", "extract", "runtime"]
    assert b"base tool v2" in built.binary.read_bytes()
    assert built.engine.images.get(f"{built.image('runtime')}:latest").id != runtime_before


def test_embed_dockerfile_change_does_not_touch_base(built: Workspace) -> None:
    built.edit("builder/app-embed.Dockerfile", "LABEL fixture.embed.change=1\n")
    run = built.doit()
    # a label changes the image, not the binary: the runtime (keyed on the binary) stays
    assert run.executed == ["embed", "extract"]
    assert run.uptodate == ["archive", "base", "runtime"]


def test_file_only_embed_copies_does_not_rebuild_base(built: Workspace) -> None:
    (built.root / "builder" / "embed-tool.txt").write_text("embed tool v2\n")
    run = built.doit()
    assert run.executed == ["embed", "extract", "runtime"]
    assert b"embed tool v2" in built.binary.read_bytes()


def test_file_outside_context_changes_nothing(built: Workspace) -> None:
    built.edit("builder/README.md", "more words\n")  # excluded by builder/.dockerignore
    (built.root / "orangescrum-ee" / ".env").write_text("DB_PASSWORD=secret\n")
    run = built.doit()
    assert run.executed == []


def test_runtime_context_change_reruns_only_runtime(built: Workspace) -> None:
    built.edit("orangescrum-ee/entrypoint.sh", "# changed\n")
    run = built.doit()
    assert run.executed == ["runtime"]
    assert run.uptodate == ["archive", "base", "embed", "extract"]


def test_env_files_never_enter_the_runtime_image(built: Workspace) -> None:
    (built.root / "orangescrum-ee" / ".env").write_text("DB_PASSWORD=hunter2\n")
    (built.root / "orangescrum-ee" / ".env.production").write_text("DB_PASSWORD=hunter3\n")
    built.edit("orangescrum-ee/entrypoint.sh", "# force a runtime build\n")
    assert built.doit().executed == ["runtime"]
    image = built.engine.images.get(f"{built.image('runtime')}:latest")
    saved = b"".join(image.save())
    assert b"hunter2" not in saved and b"hunter3" not in saved


def test_removed_image_is_rebuilt_alone(built: Workspace) -> None:
    image = built.engine.images.get(f"{built.image('runtime')}:latest")
    for tag in image.tags:
        built.engine.images.remove(tag, force=True)
    run = built.doit()
    assert run.executed == ["runtime"]


def test_deleted_or_modified_binary_is_extracted_again(built: Workspace) -> None:
    good = sha256(built.binary)
    built.binary.unlink()
    assert built.doit().executed == ["extract"]
    assert sha256(built.binary) == good

    with built.binary.open("ab") as fh:
        fh.write(b"tampered")
    run = built.doit()
    assert run.executed == ["extract"]
    assert sha256(built.binary) == good


def test_lost_doit_db_rebuilds_nothing(built: Workspace) -> None:
    for path in built.root.glob(".doit.db*"):
        path.unlink()
    run = built.doit()
    assert run.executed == []


def test_files_deleted_upstream_do_not_linger_in_package(built: Workspace) -> None:
    (built.app.path / "src" / "Lib.php").unlink()
    built.app.commit("drop lib")
    built.doit("archive")
    assert not (built.root / "package" / "src" / "Lib.php").exists()
    assert (built.root / "package" / "webroot" / "index.php").exists()


def test_edited_package_is_restored_without_rebuilding(built: Workspace) -> None:
    index = built.root / "package" / "webroot" / "index.php"
    index.write_text("<?php echo 'local hack';\n")
    run = built.doit()
    assert run.executed == ["archive"]  # same content back: embed's key is unchanged
    assert "hello v1" in index.read_text()


def test_switching_back_to_an_older_ref_reuses_its_images(built: Workspace) -> None:
    first = git(built.app.path, "rev-parse", "HEAD")
    first_runtime = built.engine.images.get(f"{built.image('runtime')}:latest").id
    built.app.write("webroot/index.php", "<?php echo 'hello v2';\n")
    built.app.commit("v2")
    built.doit()

    run = built.doit(f"ref={first}")

    # the images for that content still exist: archive and extract redo their files,
    # embed and runtime only move their `latest` tags back
    assert "base" in run.uptodate
    assert "Building" not in run.out and "building" not in run.out
    assert built.engine.images.get(f"{built.image('runtime')}:latest").id == first_runtime
    assert b"hello v1" in built.binary.read_bytes()


def test_target_one_stage_runs_only_what_it_needs(workspace: Workspace) -> None:
    run = workspace.doit("embed")
    assert run.executed == ["archive", "base", "embed"]
    assert not workspace.binary.exists()


def test_source_subfolder_archives_that_subtree(tmp_path, app_repo, engine, busybox_image) -> None:
    app_repo.write("apps/shop/webroot/index.php", "<?php echo 'shop';\n")
    app_repo.commit("monorepo")
    ws = make_workspace(tmp_path, app_repo, engine)
    try:
        ws.doit("archive", f"source={app_repo.path / 'apps' / 'shop'}")
        files = sorted(
            p.relative_to(ws.root / "package").as_posix()
            for p in (ws.root / "package").rglob("*")
            if p.is_file()
        )
        assert files == ["webroot/index.php"]
    finally:
        remove_images(engine, ws.prefix)


def test_dirty_source_tree_warns_that_only_committed_content_is_built(built: Workspace) -> None:
    built.app.write("webroot/index.php", "<?php echo 'uncommitted';\n")
    run = built.doit()
    assert "uncommitted changes" in run.out
    assert run.executed == []
    assert b"uncommitted" not in built.binary.read_bytes()


def test_doit_info_names_what_changed(built: Workspace) -> None:
    (built.root / "builder" / "base-tool.txt").write_text("base tool v3\n")
    info = built.doit("info", "base", check=False)  # doit info exits 1 when a task would run
    assert "base-tool.txt changed" in info.out
    assert "Traceback" not in info.out


def test_doit_list_shows_the_pipeline_in_order(workspace: Workspace) -> None:
    listed = workspace.doit("list").out.splitlines()
    assert [line.split()[0] for line in listed] == [
        *STAGES,
        "publish",
        "verify",
        "up",
        "down",
        "backup",
        "restore",
        "backups",
        "restores",
        "restore-undo",
        "restore-drop",
        "prune",
        "tenant-add",
        "tenants",
        "tenant-remove",
        "proxy",
        "deploy",
        "releases",
        "rollback",
        "swarm-manager",
        "swarm-deploy",
        "kube",
    ]
    assert all(len(line.split()) > 3 for line in listed)  # each has a description


def test_config_precedence_cli_over_env_over_pyproject(built: Workspace) -> None:
    other = built.prefix + "-other"
    run = built.doit(
        "runtime", f"runtime_image={other}", env={"DURANGO_RUNTIME_IMAGE": "ignored-env-name"}
    )
    assert run.executed == ["runtime"]
    assert built.engine.images.get(f"{other}:latest")
    with pytest.raises(docker.errors.ImageNotFound):  # the environment lost to the command line
        built.engine.images.get("ignored-env-name:latest")
    remove_images(built.engine, other)


def test_records_are_json_and_dep_file_is_sqlite(built: Workspace) -> None:
    record = json.loads((built.root / ".durango" / "archive.json").read_text())
    assert record["commit"] == git(built.app.path, "rev-parse", "HEAD")
    header = (built.root / ".doit.db").read_bytes()[:16]
    assert header == b"SQLite format 3\x00"


def reimport(image: str, content: str) -> None:
    """Give `image` new content under the same tag, as a re-import or re-pull would."""
    subprocess.run(
        ["docker", "build", "-q", "-t", image, "-"],
        input=f"FROM {image}\nRUN echo {content} > /etc/changed\n",
        text=True,
        check=True,
        capture_output=True,
    )


def test_reimported_base_image_rebuilds_what_stands_on_it(built: Workspace) -> None:
    """The runtime's FROM image counts by ID: same tag, new content, new runtime image."""
    other = f"{built.prefix}-newbase:1"
    built.engine.images.get("durango-local/busybox:latest").tag(other)
    reimport(other, "changed")
    assert built.doit(f"runtime_base={other}").executed == ["runtime"]
    built.engine.images.get(other).tag(f"{built.prefix}-newbase", "1")  # unchanged tag: no-op
    assert built.doit(f"runtime_base={other}").executed == []
    reimport(other, "changed-again")
    assert built.doit(f"runtime_base={other}").executed == ["runtime"]


def test_parallel_run_builds_everything_once(workspace: Workspace) -> None:
    run = workspace.doit("-n", "2")
    assert sorted(run.executed) == sorted(STAGES), run.out
    assert workspace.doit().executed == []
