"""prune: give back the disk that every commit's images take, keeping what can still be used.

Per image stage (base, embed, runtime) it keeps the image of the current key, the one `latest`
points at, and the `keep_images` newest others; it never removes an image a container (running
or stopped) was created from, a base image that a kept embed image was built on, an image a
kept backup names (a restore starts exactly that image: the backup folders of the project and
of every tenant are read), nor one a project runs on or can switch back to (its generations),
nor a release's image that `doit rollback` can go back to (the serving release and the
`keep_releases` newest before it).
Then the hash cache forgets files that are gone and leftover temp files in .durango/ go.
`--dry-run` says what it would do. A following `doit` is still a no-op: the current keys' images
stay.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.build import base, embed, runtime
from tasks.build.image_stage import INPUTS_LABEL, ImageInputs
from tasks.core.errors import DurangoError
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.core.ports import ContainerEngine, ImageInfo
from tasks.deploy import backup, generations, project_lock, releases


def current_tags(pipe: Pipeline) -> set[str]:
    """The tags the stages' current inputs call for (a stage that cannot tell keeps latest)."""
    tags = set()
    for stage in (base, embed, runtime):
        try:
            inputs: ImageInputs = stage.inputs(pipe)
        except DurangoError:
            continue
        tags.add(inputs.tag)
    return tags


def built_on(image: ImageInfo) -> str | None:
    """The base image ID an embed image was built on (from its inputs label)."""
    try:
        upstream = json.loads(image.labels.get(INPUTS_LABEL, "{}")).get("upstream", {})
    except ValueError:
        return None
    found = upstream.get("base image")
    return str(found) if found else None


def backup_folders(pipe: Pipeline) -> set[Path]:
    """Where backups may be: backup_dir and the default backups/ folder, with the folders in
    them (every tenant's backups/<name>/)."""
    roots = {pipe.settings.backup_dir, pipe.settings.root / "backups"}
    found = set()
    for root in roots:
        if root.is_dir():
            found.add(root)
            found |= {p for p in root.iterdir() if p.is_dir() and not p.is_symlink()}
    return found


def named_images(pipe: Pipeline) -> set[str]:
    """Image IDs kept backups name, those of every project's generations, and the releases a
    rollback can go back to (tags or IDs)."""
    found = generations.kept_images(pipe.settings.state_dir) | releases.images_to_keep(pipe)
    for folder in backup_folders(pipe):
        for _, peeked in backup.complete_backups(folder, None):
            found |= set(peeked.images)
    return found


def plan(pipe: Pipeline, containers: ContainerEngine) -> tuple[list[ImageInfo], list[ImageInfo]]:
    """(images to remove, images kept), newest first within each stage."""
    settings = pipe.settings
    keep_tags = current_tags(pipe)
    in_use = containers.images_in_use() | named_images(pipe)
    remove: list[ImageInfo] = []
    kept: list[ImageInfo] = []
    based: set[str] = set()
    for name in (settings.runtime_image, settings.embed_image, settings.base_image):
        others = 0
        for image in containers.images_named(name):
            current = f"{name}:latest" in image.tags or keep_tags & set(image.tags)
            named = image.id in in_use or bool(in_use & set(image.tags))
            if current or named or image.id in based:
                kept.append(image)
            elif others < settings.keep_images:
                others += 1
                kept.append(image)
            else:
                remove.append(image)
                continue
            if name == settings.embed_image:
                based.add(built_on(image) or "")
    return remove, kept


def prune(pipe: Pipeline, dry_run: bool = False) -> None:
    with project_lock.held(pipe, "prune"):
        _prune(pipe, dry_run)


def _prune(pipe: Pipeline, dry_run: bool) -> None:
    containers = pipe.containers
    remove, kept = plan(pipe, containers)
    verb = "would remove" if dry_run else "removed"
    before = containers.layers_size()
    for image in remove:
        if not dry_run:
            containers.remove_image(image)
        print(f"prune: {verb} {', '.join(image.tags)} ({image.size / 1e6:.0f} MB)", flush=True)
    forgotten = 0 if dry_run else pipe.hashes.forget_missing()
    leftovers = list(pipe.settings.state_dir.glob(".*.tmp"))
    for path in leftovers if not dry_run else []:
        path.unlink(missing_ok=True)
    after = before if dry_run else containers.layers_size()
    print(
        f"prune: {len(remove)} image(s) {verb}, {len(kept)} kept; "
        f"{(before - after) / 1e6:.0f} MB reclaimed (image layers {before / 1e9:.2f} -> "
        f"{after / 1e9:.2f} GB); {forgotten} hash-cache entries and {len(leftovers)} temp files "
        f"{'would go' if dry_run else 'dropped'}"
    )


PARAMS = [
    {"name": "dry_run", "long": "dry-run", "type": bool, "default": False,
     "help": "say what would be removed, remove nothing"},
]  # fmt: skip


def task(pipe: Pipeline) -> TaskDict:
    def run(dry_run: bool) -> None:
        prune(pipe, dry_run)

    doc = "remove old images of every stage (keep_images newest + current), stale cache entries"
    return command_task(pipe, doc, run, params=PARAMS)
