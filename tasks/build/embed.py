"""Stage 3, embed: the app from package/ built into the binary, on top of the exact base image.

Key: the base image ID, the content of package/, the Dockerfile and its other builder/ files,
and the dependency inputs under deps/ (composer.json, composer.lock, a local Composer
repository). The context is builder/ with deps/ and the app streamed in: no second copy on disk.
The Dockerfile installs dependencies from deps/ alone before it copies the app, so BuildKit
reuses that layer for every commit that leaves them alone; the build log says which happened.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tasks.build import archive, base
from tasks.build.content import ContextFile, file_digests, read_by, tree_files
from tasks.build.image_stage import ImageInputs, built_image_id, stage_task
from tasks.core.errors import BuildError, ConfigError
from tasks.core.pipeline import Pipeline, TaskDict

REPOSITORY_IN_IMAGE = "/go/src/deps/repository"
DEPS_STEP = "install-deps /go/src/deps"


def repository_definition(location: str, root: Path) -> tuple[dict[str, str], Path | None]:
    """A Composer repository for `composer_repository`: (its definition, the local folder to
    send with the build or None for a URL). A folder of zips is an artifact repository; a folder
    with a composer.json, or of such folders, a path repository; a URL a Composer repository
    (Satis, Private Packagist, a mirror)."""
    if "://" in location:
        return {"type": "composer", "url": location}, None
    folder = Path(os.path.expanduser(location))
    folder = folder if folder.is_absolute() else root / folder
    if not folder.is_dir():
        raise ConfigError(f"composer_repository {location}: no such folder (nor a URL)")
    if any(folder.glob("*.zip")):
        return {"type": "artifact", "url": REPOSITORY_IN_IMAGE}, folder
    if (folder / "composer.json").is_file():
        return {"type": "path", "url": REPOSITORY_IN_IMAGE}, folder
    if any(folder.glob("*/composer.json")):
        return {"type": "path", "url": f"{REPOSITORY_IN_IMAGE}/*"}, folder
    raise ConfigError(
        f"composer_repository {location}: neither package zips (artifact repository) nor "
        "composer.json files (path repository)"
    )


def deps_files(pipe: Pipeline) -> tuple[list[ContextFile], dict[str, str]]:
    """deps/ of the context (what the dependency step may read) and the build args it needs."""
    settings = pipe.settings
    package = settings.package_dir
    args = {"COMPOSER_PACKAGIST": "true" if settings.composer_packagist else "false"}
    if not (package / "composer.json").is_file():
        return [_note("the app has no composer.json")], args
    if (package / "vendor").is_dir():
        return [_note("vendor/ is committed with the app")], args
    files = [ContextFile("deps/composer.json", package / "composer.json")]
    if (package / "composer.lock").is_file():
        files.append(ContextFile("deps/composer.lock", package / "composer.lock"))
    files.append(_note("composer.json"))
    if settings.composer_repository:
        definition, folder = repository_definition(settings.composer_repository, settings.root)
        args["COMPOSER_REPOSITORY"] = json.dumps(definition, separators=(",", ":"))
        if folder is not None:
            files += list(tree_files(folder, "deps/repository"))
    return files, args


def _note(text: str) -> ContextFile:
    """deps/.durango-deps: always there (so the Dockerfile's COPY deps/ never fails), and says
    why composer runs or not."""
    return ContextFile("deps/.durango-deps", Path(os.devnull), text.encode())


def composer_auth_secret(pipe: Pipeline) -> dict[str, str]:
    """The token for private repositories, as a BuildKit secret (from composer_auth or
    COMPOSER_AUTH): its value is checked for shape here and never printed or keyed."""
    path = pipe.settings.composer_auth
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"composer_auth {path}: {exc.strerror}") from None
        where, origin = f"src={path}", f"composer_auth {path}"
    elif os.environ.get("COMPOSER_AUTH"):
        text, where, origin = os.environ["COMPOSER_AUTH"], "env=COMPOSER_AUTH", "COMPOSER_AUTH"
    else:
        return {}
    try:
        json.loads(text)
    except ValueError:
        raise ConfigError(f"{origin} is not JSON (Composer's auth.json format)") from None
    return {"composer_auth": where}


def dependency_report(log: list[str]) -> list[str]:
    """Whether the dependency step ran or BuildKit reused it, from the build's log."""
    step = next(
        (m.group(1) for line in log if (m := re.match(r"#(\d+) \[.*\] RUN .*" + DEPS_STEP, line))),
        None,
    )
    if step is None:
        return []
    if any(line == f"#{step} CACHED" for line in log):
        return ["dependencies reused (composer.json, composer.lock and the base unchanged)"]
    said = [m.group(1) for line in log if (m := re.match(rf"#{step} [\d.]+ (deps: .*)", line))]
    return [said[-1] if said else "dependencies installed"]


def inputs(pipe: Pipeline) -> ImageInputs:
    """Not memoised: the base image ID and package/ change during a run."""
    settings = pipe.settings
    if not (settings.builder_dir / settings.embed_dockerfile).is_file():
        raise BuildError(f"embed: {settings.builder_dir / settings.embed_dockerfile} is missing")
    record = archive.archived(pipe)
    archive.check_app(pipe)
    deps, deps_args = deps_files(pipe)
    text = (settings.builder_dir / settings.embed_dockerfile).read_text()
    files = base.builder_files(pipe, settings.embed_dockerfile) + read_by(text, deps)
    base_inputs = base.inputs(pipe)
    build_args = {
        "BASE_IMAGE": base_inputs.tag,
        "APP_DOCROOT": settings.docroot,
        "COMPOSER_SCRIPTS": "true" if settings.composer_scripts else "false",
        "SOURCE_DATE_EPOCH": str(record.get("source_date_epoch", "0")),
        **deps_args,
        **settings.embed_args,
    }
    return ImageInputs(
        stage="embed",
        name=settings.embed_image,
        dockerfile=settings.embed_dockerfile,
        files=files,
        digests=file_digests(files, pipe.hashes),
        build_args=build_args,
        upstream={"base image": base.image_id(pipe), "package": record["content_key"]},
        extra_files=lambda: tree_files(settings.package_dir, "package"),
        secrets=composer_auth_secret(pipe),
        network=settings.embed_network,
        no_cache=settings.embed_no_cache,
        report=dependency_report,
    )


def image_id(pipe: Pipeline) -> str:
    """The ID of the image this stage's inputs call for (BuildError when not built)."""
    return built_image_id(pipe.engine, inputs(pipe))


DOC = "app embedded into the binary (key: base image ID, package/ content, deps, Dockerfile)"


def task(pipe: Pipeline) -> TaskDict:
    return stage_task(pipe, DOC, lambda: inputs(pipe), ["archive", "base"])
