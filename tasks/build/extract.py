"""Stage 4, extract: the binary copied out of the embed image into the deployment bundle.

Key: the embed image ID and the binary on disk (by content). Streams in 1 MiB chunks and renames
into place only when complete: the destination is never half-written.
"""

from __future__ import annotations

import time

from tasks.build import embed
from tasks.core.pipeline import Pipeline, TaskDict, command_task

RECORD = "extract"


def why(pipe: Pipeline) -> str | None:
    settings = pipe.settings
    record = pipe.read_record(RECORD)
    image = embed.image_id(pipe)
    if record is None:
        return "the binary was never extracted"
    if record["image_id"] != image:
        return f"embed image changed: {record['image_id'][7:19]} -> {image[7:19]}"
    if record["binary_path"] != settings.binary_path:
        return f"binary_path changed to {settings.binary_path}"
    if not settings.binary.exists():
        return f"{settings.binary.relative_to(settings.root)} is missing"
    if pipe.hashes.sha256(settings.binary) != record["sha256"]:
        return f"{settings.binary.relative_to(settings.root)} was modified since extraction"
    return None


def run(pipe: Pipeline) -> None:
    settings = pipe.settings
    image = embed.image_id(pipe)
    path_in_image = settings.binary_path.format(arch=pipe.engine.arch())
    dest = settings.binary
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        share = f" of {total / 1e6:.0f}" if total else ""
        print(f"extract: {done / 1e6:.0f}{share} MB", flush=True)

    pipe.drop_record(RECORD)
    sha256, size = pipe.engine.copy_file_out(image, path_in_image, dest, progress)
    pipe.hashes.remember(dest, sha256)
    pipe.write_record(
        RECORD, {"image_id": image, "binary_path": settings.binary_path, "sha256": sha256}
    )
    seconds = time.monotonic() - started
    print(
        f"extract: {dest.relative_to(settings.root)} <- {path_in_image} "
        f"({size / 1e6:.1f} MB, sha256 {sha256[:12]}) in {seconds:.1f}s"
    )


DOC = "binary copied out of the embed image (key: embed image ID, binary on disk)"


def task(pipe: Pipeline) -> TaskDict:
    return command_task(pipe, DOC, lambda: run(pipe), lambda: why(pipe), ["embed"])
