"""What the three image stages (base, embed, runtime) share: key, status, build, explanation.

An image is tagged `<name>:<key[:12]>` and labelled with its full key and the inputs that made
it, so the engine itself answers "is this stage built?": a lost .doit.db rebuilds nothing, a
removed image is rebuilt, and `doit info` can name what changed since `<name>:latest`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO

from tasks.build.content import ContextFile, write_context_tar
from tasks.build.registry import RegistryCache
from tasks.build.source import image_labels
from tasks.core.errors import BuildError, DurangoError
from tasks.core.pipeline import Pipeline, StageCheck, TaskDict, action
from tasks.core.ports import BuildRequest, ImageEngine, ImageLookup
from tasks.formats.dockerfile import from_images

KEY_LABEL = "io.durango.key"
INPUTS_LABEL = "io.durango.inputs"


@dataclass
class ImageInputs:
    """Everything an image build can read: context files, build args, upstream identities."""

    stage: str
    name: str
    dockerfile: str
    files: list[ContextFile]
    digests: dict[str, str]
    build_args: dict[str, str]
    upstream: dict[str, str] = field(default_factory=dict)
    extra_files: Callable[[], Iterable[ContextFile]] | None = (
        None  # streamed after `files` (e.g. the app tree)
    )
    # BuildKit secrets (id -> "src=<file>" or "env=<NAME>"): never part of the key or the labels
    secrets: dict[str, str] = field(default_factory=dict)
    # `none`: the build's RUN steps get no network (proves an offline build); "" the default
    network: str = ""
    no_cache: bool = False  # build every step again (BuildKit's cache unused)
    # stage-specific lines to print from the build log (e.g. whether dependencies were reused)
    report: Callable[[list[str]], list[str]] | None = None
    # a check of the built image (e.g. that it can run the binary): on failure the image's tags
    # go again, so the stage stays stale
    check: Callable[[str], None] | None = None

    def described(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "dockerfile": self.dockerfile,
            "files": self.digests,
            "build_args": self.build_args,
            "upstream": self.upstream,
        }

    @property
    def key(self) -> str:
        text = json.dumps(self.described(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.key[:12]}"

    def write_context(self, out: IO[bytes]) -> None:
        files = list(self.files)
        if self.extra_files is not None:
            files.extend(self.extra_files())
        write_context_tar(out, files)


def base_image_ids(
    engine: ImageLookup, dockerfile: str, build_args: Mapping[str, str]
) -> dict[str, str]:
    """`FROM <image>` -> the local image ID, so a re-imported or re-pulled base makes it stale."""
    ids = {}
    for image in from_images(dockerfile, build_args):
        found = engine.image(image)
        ids[f"FROM {image}"] = found.id if found else "not present locally"
    return ids


@dataclass(frozen=True)
class ImageStatus:
    """What the stage has to do: nothing, move `latest`, or build; and why."""

    plan: str  # "up-to-date" | "retag" | "build"
    reason: str
    image_id: str | None = None


def _changes(previous: Mapping[str, object], current: Mapping[str, object]) -> list[str]:
    """Human names for the inputs that differ between two `described()` dicts."""
    changed = []
    for part in ("files", "build_args", "upstream"):
        old, new = previous.get(part), current.get(part)
        old = old if isinstance(old, dict) else {}
        new = new if isinstance(new, dict) else {}
        for name in sorted(set(old) | set(new)):
            if old.get(name) == new.get(name):
                continue
            if part == "files":
                how = "added" if name not in old else "removed" if name not in new else "changed"
                changed.append(f"{name} {how}")
            elif part == "build_args":
                changed.append(f"build arg {name}")
            else:
                changed.append(f"{name} {str(old.get(name))[:19]} -> {str(new.get(name))[:19]}")
    return changed


def image_status(engine: ImageLookup, inputs: ImageInputs) -> ImageStatus:
    """Compare the image the inputs call for with what the engine holds."""
    found = engine.image(inputs.tag)
    labels = found.labels if found else {}
    if found is not None and labels.get(KEY_LABEL) == inputs.key:
        # one inspect answers both questions: its tags say where `latest` points
        if f"{inputs.name}:latest" in found.tags:
            return ImageStatus("up-to-date", f"{inputs.tag} is built", found.id)
        return ImageStatus(
            "retag", f"{inputs.tag} is built; {inputs.name}:latest points elsewhere", found.id
        )
    latest = engine.image(f"{inputs.name}:latest")
    if latest is None:
        return ImageStatus("build", f"no {inputs.name} image built yet (key {inputs.key[:12]})")
    latest_labels = latest.labels
    if latest_labels.get(KEY_LABEL) == inputs.key:  # built, its key tag removed by someone
        return ImageStatus(
            "retag", f"{inputs.name}:latest is built; {inputs.tag} is gone", latest.id
        )
    try:
        previous = json.loads(latest_labels.get(INPUTS_LABEL, "{}"))
    except ValueError:
        previous = {}
    changes = _changes(previous, inputs.described()) or ["inputs"]
    return ImageStatus(
        "build", f"changed since {inputs.name}:latest: {', '.join(changes)} (key {inputs.key[:12]})"
    )


def ensure_image(
    engine: ImageEngine,
    inputs: ImageInputs,
    labels: Mapping[str, str],
    cache: RegistryCache | None = None,
) -> str:
    """Bring the engine to the image the inputs call for; returns its ID.

    If doit runs this action although the image exists and `latest` points at it, the user forced
    the stage (`doit -a <stage>`): build again (BuildKit reuses what it can). With a registry
    cache, a missing image is pulled by its key before anything is built, and pushed after.
    """
    status = image_status(engine, inputs)
    if status.plan == "retag" and status.image_id:
        engine.tag(status.image_id, inputs.name, inputs.key[:12])
        engine.tag(status.image_id, inputs.name, "latest")
        print(f"{inputs.stage}: {inputs.tag} already built; {inputs.name}:latest now points at it")
        return status.image_id
    if cache is not None and status.plan == "build":
        pulled = cache.pull(inputs.stage, inputs.name, inputs.key, KEY_LABEL)
        if pulled is not None:
            return str(pulled)
    print(f"{inputs.stage}: building {inputs.tag} ({status.reason})", flush=True)
    started = time.monotonic()
    all_labels = {
        **labels,
        "org.opencontainers.image.created": datetime.now(timezone.utc).isoformat(
            timespec="seconds"
        ),
        KEY_LABEL: inputs.key,
        INPUTS_LABEL: json.dumps(inputs.described(), sort_keys=True, separators=(",", ":")),
    }
    # An image that must pass a check gets `latest` only once it has: a refused build leaves
    # `latest` where it was.
    tags = [inputs.tag] if inputs.check is not None else [inputs.tag, f"{inputs.name}:latest"]
    built = engine.build(
        BuildRequest(
            stage=inputs.stage,
            write_context=inputs.write_context,
            dockerfile=inputs.dockerfile,
            tags=tags,
            build_args=inputs.build_args,
            labels=all_labels,
            secrets=inputs.secrets,
            network=inputs.network,
            no_cache=inputs.no_cache,
        )
    )
    image_id = built.image_id
    if inputs.check is not None:
        try:
            inputs.check(image_id)
        except DurangoError:
            engine.untag(inputs.tag)
            raise
        engine.tag(image_id, inputs.name, "latest")
    for line in inputs.report(built.log) if inputs.report else []:
        print(f"{inputs.stage}: {line}", flush=True)
    print(
        f"{inputs.stage}: built {inputs.tag} ({image_id[7:19]}) in "
        f"{time.monotonic() - started:.1f}s",
        flush=True,
    )
    if cache is not None:
        cache.push(inputs.stage, inputs.name, image_id, [inputs.key[:12]])
    return image_id


def reason_to_build(engine: ImageLookup, inputs: ImageInputs) -> str | None:
    """Why the stage would run (None: its image is built and `latest` points at it)."""
    status = image_status(engine, inputs)
    return None if status.plan == "up-to-date" else status.reason


def built_image_id(engine: ImageLookup, inputs: ImageInputs) -> str:
    """ID of the image the inputs call for; BuildError when that stage has not run."""
    status = image_status(engine, inputs)
    if status.image_id is None:
        raise BuildError(f"{inputs.tag} is not built; run `doit {inputs.stage}`")
    return status.image_id


def registry_cache(pipe: Pipeline) -> RegistryCache | None:
    """The shared build cache, when `registry` is set (one per run)."""
    settings = pipe.settings
    if not settings.registry:
        return None
    return pipe.once(
        "registry",
        lambda: RegistryCache(pipe.engine, settings.registry, settings.registry_required),
    )


def stage_task(
    pipe: Pipeline, doc: str, inputs: Callable[[], ImageInputs], task_dep: list[str]
) -> TaskDict:
    """The doit task of an image stage: up to date while its keyed image is there; otherwise
    pull it from the registry cache, move `latest`, or build it."""

    def run() -> str:
        return ensure_image(pipe.engine, inputs(), image_labels(pipe), registry_cache(pipe))

    return {
        "doc": doc,
        "actions": [action(pipe, run)],
        "uptodate": [StageCheck(pipe, lambda: reason_to_build(pipe.engine, inputs()))],
        "task_dep": task_dep,
        "verbosity": 2,
    }
