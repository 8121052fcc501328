"""`doit prune` after many commits: keeps the current images, the newest `keep_images` others,
anything a container uses, and every image a kept backup or a generation names; removes the
rest, frees disk, and leaves the pipeline a no-op."""

from __future__ import annotations

import json

import docker
from helpers import STAGES, Workspace


def test_prune_after_five_commits_keeps_what_it_promises(
    workspace: Workspace, engine: docker.DockerClient
) -> None:
    runtime_ids = []
    for n in range(5):
        workspace.app.write("webroot/index.php", f"<?php echo 'version {n}';\n")
        workspace.app.commit(f"version {n}")
        assert workspace.doit().executed[-1] == "runtime"
        runtime_ids.append(str(engine.images.get(workspace.image("runtime") + ":latest").id))
    oldest = engine.containers.run(
        runtime_ids[0],
        ["sleep", "300"],
        entrypoint=["/bin/sh", "-c", 'exec "$@"', "sh"],
        detach=True,
    )
    try:
        dry = workspace.doit("prune", "--dry-run", "keep_images=2")
        assert "would remove" in dry.out
        assert len(engine.images.list(name=workspace.image("runtime"))) == 5

        before = engine.df()["LayersSize"]
        run = workspace.doit("prune", "keep_images=2")
        runtime = {i.id for i in engine.images.list(name=workspace.image("runtime"))}
        # the current one, the two newest others, and the oldest: a container uses it
        assert runtime == {*runtime_ids[-3:], runtime_ids[0]}
        # app-only commits never rebuilt the dependencies or the base: one each, kept
        assert len(engine.images.list(name=workspace.image("embed"))) == 1
        assert len(engine.images.list(name=workspace.image("base"))) == 1
        assert engine.df()["LayersSize"] < before
        assert "1 image(s) removed" in run.out and "MB reclaimed" in run.out
        assert workspace.doit().uptodate == STAGES  # still a no-op
    finally:
        oldest.remove(force=True, v=True)


def test_prune_keeps_the_images_kept_backups_and_generations_name(
    workspace: Workspace, engine: docker.DockerClient
) -> None:
    runtime_ids = []
    for n in range(4):
        workspace.app.write("webroot/index.php", f"<?php echo 'version {n}';\n")
        workspace.app.commit(f"version {n}")
        workspace.doit()
        runtime_ids.append(str(engine.images.get(workspace.image("runtime") + ":latest").id))
    # a tenant's backup names the oldest runtime image (a restore starts exactly that one) ...
    backup = workspace.root / "backups" / "acme" / "20300101T000000.000000Z"
    backup.mkdir(parents=True)
    (backup / "manifest.json").write_text(json.dumps({
        "tool": "durango-backup/2", "kind": "backup", "sequence": 1,
        "images": {"app": runtime_ids[0]},
    }))  # fmt: skip
    # ... and a project can switch back to a generation that runs the second oldest
    records = workspace.root / ".durango" / "generations" / "orangescrum-ee"
    records.mkdir(parents=True)
    (records / "0.json").write_text(json.dumps({
        "number": 0, "database": "app", "volumes": {}, "image": runtime_ids[1],
    }))  # fmt: skip
    workspace.doit("prune", "keep_images=1")
    runtime = {i.id for i in engine.images.list(name=workspace.image("runtime"))}
    assert runtime == set(runtime_ids)  # current, one newest other, and the two named
