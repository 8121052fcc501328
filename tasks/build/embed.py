"""Stage 3, embed: what every app of one lock shares, on top of the exact base image: the
app's Composer dependencies (and the base's shared extensions and php.ini-production), packed
into one tar that the extract stage appends to the base binary after the app.

Key: the base image ID, the Dockerfile and its other builder/ files, and the dependency inputs
under deps/ (composer.json, composer.lock, a local Composer repository). Never the app's other
files: an app-only commit leaves this image as it is. When the repository replaces Packagist,
deps/composer.lock is the build's copy of the lock with its download locations pointed at the
repository (formats/composer_lock.py); the app's own lock is never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from tasks.build import archive, base
from tasks.build.content import ContextFile, file_digests, read_by, tree_files
from tasks.build.image_stage import ImageInputs, built_image_id, stage_task
from tasks.core.errors import BuildError, ConfigError
from tasks.core.files import atomic_write_text
from tasks.core.pipeline import Pipeline, TaskDict
from tasks.formats import composer_lock

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
    lock = package / "composer.lock"
    repository: list[ContextFile] = []
    folder = None
    if settings.composer_repository:
        definition, folder = repository_definition(settings.composer_repository, settings.root)
        args["COMPOSER_REPOSITORY"] = json.dumps(definition, separators=(",", ":"))
        if folder is not None:
            repository = list(tree_files(folder, "deps/repository"))
    if lock.is_file() and settings.composer_repository and not settings.composer_packagist:
        text = pointed_lock(pipe, lock, folder, repository)
        files.append(ContextFile("deps/composer.lock", lock, text.encode()))
    elif lock.is_file():
        files.append(ContextFile("deps/composer.lock", lock))
    files.append(_note("composer.json"))
    return files + repository, args


def pointed_lock(
    pipe: Pipeline, lock: Path, folder: Path | None, repository: list[ContextFile]
) -> str:
    """The build's copy of the lock, its dists in the repository: remembered in .durango/ by the
    lock's and the repository's content, so a no-op run opens no zip and asks no server."""
    settings = pipe.settings
    where = settings.composer_repository
    identity = hashlib.sha256()
    identity.update(pipe.hashes.sha256(lock).encode())
    identity.update(where.encode())
    for name, digest in sorted(file_digests(repository, pipe.hashes).items()):
        identity.update(f"{name}\0{digest}\n".encode())
    cached = settings.state_dir / f"composer-lock-{identity.hexdigest()[:24]}.json"
    if cached.is_file():
        return cached.read_text()
    if folder is None:
        names = [str(p.get("name")) for p in json.loads(lock.read_text()).get("packages") or []]
        index = composer_lock.metadata_index(_fetcher(where, _auth_json(pipe)), where, names)
    elif any(folder.glob("*.zip")):
        index = composer_lock.artifact_index(folder, REPOSITORY_IN_IMAGE)
    else:
        index = composer_lock.path_index(folder, REPOSITORY_IN_IMAGE)
    text = composer_lock.rewrite(lock.read_text(), index, where)
    for old in settings.state_dir.glob("composer-lock-*.json"):
        old.unlink(missing_ok=True)
    atomic_write_text(cached, text)
    return text


def _fetcher(url: str, auth: dict[str, dict[str, object]]) -> Callable[[str], bytes]:
    """GET with the credentials composer_auth (or COMPOSER_AUTH) holds for the repository's host:
    http-basic or bearer, as Composer reads them."""
    import base64  # only when a repository URL is used: keeps no-op runs light
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    headers = {}
    basic = (auth.get("http-basic") or {}).get(host)
    bearer = (auth.get("bearer") or {}).get(host)
    if isinstance(basic, dict):
        pair = f"{basic.get('username', '')}:{basic.get('password', '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    elif isinstance(bearer, str):
        headers["Authorization"] = f"Bearer {bearer}"

    def fetch(target: str) -> bytes:
        request = urllib.request.Request(target, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise OSError(f"{target}: 404") from None
            raise ConfigError(f"composer_repository {url}: {target} answered {exc.code}") from None
        except OSError as exc:
            raise ConfigError(f"composer_repository {url} cannot be reached: {exc}") from None

    return fetch


def _auth_json(pipe: Pipeline) -> dict[str, dict[str, object]]:
    path = pipe.settings.composer_auth
    raw = path.read_text() if path is not None and path.is_file() else ""
    raw = raw or os.environ.get("COMPOSER_AUTH") or ""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


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
    """Not memoised: the base image ID and package/ change during a run. The app's files are not
    inputs: an app-only commit leaves this stage up to date."""
    settings = pipe.settings
    if not (settings.builder_dir / settings.embed_dockerfile).is_file():
        raise BuildError(f"embed: {settings.builder_dir / settings.embed_dockerfile} is missing")
    archive.archived(pipe)  # the dependency inputs are read from package/
    deps, deps_args = deps_files(pipe)
    text = (settings.builder_dir / settings.embed_dockerfile).read_text()
    files = base.builder_files(pipe, settings.embed_dockerfile) + read_by(text, deps)
    base_inputs = base.inputs(pipe)
    build_args = {"BASE_IMAGE": base_inputs.tag, **deps_args, **settings.embed_args}
    return ImageInputs(
        stage="embed",
        name=settings.embed_image,
        dockerfile=settings.embed_dockerfile,
        files=files,
        digests=file_digests(files, pipe.hashes),
        build_args=build_args,
        upstream={"base image": base.image_id(pipe)},
        secrets=composer_auth_secret(pipe),
        network=settings.embed_network,
        no_cache=settings.embed_no_cache,
        report=dependency_report,
    )


def image_id(pipe: Pipeline) -> str:
    """The ID of the image this stage's inputs call for (BuildError when not built)."""
    return built_image_id(pipe.engine, inputs(pipe))


DOC = (
    "the app's dependencies packed on the base (key: base image ID, composer files, "
    "Dockerfile): an app-only commit leaves it up to date"
)


def task(pipe: Pipeline) -> TaskDict:
    return stage_task(pipe, DOC, lambda: inputs(pipe), ["archive", "base"])
