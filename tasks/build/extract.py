"""Stage 4, extract: the binary of the deployment bundle, made by appending the app to the base
binary (formats/payload.py): `[base binary][payload: the app, its embedded configuration, then
the embed image's dependencies][trailer]`. No Go link, no PHP compile, no image build: an
app-only commit costs one read of the app and one write of the binary.

The base binary and the dependency tar are copied out of the embed image once per image and kept
in .durango/embed/<image>/. Key: the embed image ID, the archive's content key, the embedded
configuration (Caddyfile, php.ini, the facts' links and php.ini limits) and the binary on disk.
The binary is written beside its destination and renamed: never half-written.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.build import archive, embed
from tasks.build.app import checked_facts, facts
from tasks.core.errors import BuildError
from tasks.core.files import atomic_write_text
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.core.ports import short_id
from tasks.formats import app_facts, payload

RECORD = "extract"
DEPS_IN_IMAGE = "/go/src/embed/deps.tar"
PHP_BASE = ".frankenphp/php-base.ini"
CONFIG_FILES = ("Caddyfile", "php.ini", "app-path.php")  # in builder/, embedded in .frankenphp/
KEEP_PARTS = 2  # embed images whose parts stay in .durango/embed/ (switching back is free)


@dataclass(frozen=True)
class Parts:
    """What the embed image gives every app of its lock, on the host."""

    base: Path
    deps: Path
    names: frozenset[str]  # the entries of deps.tar (no leading ./)
    php_base: bytes


def _deps_index(deps: Path) -> tuple[frozenset[str], bytes]:
    names = set()
    php_base = b""
    with tarfile.open(deps) as tar:
        for member in tar:
            name = member.name.removeprefix("./").rstrip("/")
            names.add(name if not member.isdir() else name + "/")
            if name == PHP_BASE:
                extracted = tar.extractfile(member)
                php_base = extracted.read() if extracted else b""
    return frozenset(names), php_base


def parts(pipe: Pipeline, image: str) -> Parts:
    """The embed image's base binary and dependency tar, copied out once per image."""
    root = pipe.settings.state_dir / "embed"
    folder = root / short_id(image)
    done = folder / "complete.json"
    if not done.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        path_in_image = pipe.settings.binary_path.format(arch=pipe.engine.arch())

        def progress(done_bytes: int, total: int) -> None:
            share = f" of {total / 1e6:.0f}" if total else ""
            print(f"extract: {done_bytes / 1e6:.0f}{share} MB", flush=True)

        started = time.monotonic()
        pipe.engine.copy_file_out(image, path_in_image, folder / "base", progress)
        pipe.engine.copy_file_out(image, DEPS_IN_IMAGE, folder / "deps.tar", progress)
        atomic_write_text(done, json.dumps({"image": image, "binary_path": path_in_image}))
        print(
            f"extract: base binary and dependencies of {short_id(image)} copied out in "
            f"{time.monotonic() - started:.1f}s",
            flush=True,
        )
        others = sorted((p for p in root.iterdir() if p != folder), key=lambda p: p.stat().st_mtime)
        for old in others[: max(0, len(others) - (KEEP_PARTS - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    names, php_base = pipe.once(f"deps-index-{image}", lambda: _deps_index(folder / "deps.tar"))
    return Parts(folder / "base", folder / "deps.tar", names, php_base)


def php_ini(pipe: Pipeline, php_base: bytes) -> bytes:
    """PHP's production defaults (from the base), our settings (builder/php.ini), the app's own
    limits (the facts' php.ini), then the session folder again: the binary's own."""
    settings = pipe.settings
    found = facts(pipe)
    text = php_base.decode() if php_base else "; (the base image carries no php.ini-production)\n"
    text += "\n; --- Durango Builder (builder/php.ini) ---\n"
    text += (settings.builder_dir / "php.ini").read_text()
    if found.php_ini:
        text += f"\n; --- the app's own limits ({found.php_ini}) ---\n"
        text += (settings.package_dir / found.php_ini).read_text()
        text += "\n; the binary keeps its sessions where it can write them\n"
        text += 'session.save_path = "${FRANKENPHP_SESSION_DIR}"\n'
    return text.encode()


def writable_web_paths(pipe: Pipeline) -> str:
    """The facts' writable paths under the web root, as URL path prefixes for a regexp
    alternation ("/files|/temp"); one that never matches when there are none."""
    docroot = pipe.settings.docroot.strip("/")
    found = []
    for link in facts(pipe).links:
        if link.kind != "dir":
            continue
        if docroot in ("", "."):
            url = "/" + link.path
        elif link.path.startswith(docroot + "/"):
            url = link.path[len(docroot) :]
        else:
            continue
        found.append(re.escape(url))
    return "|".join(found) or "/\\.no-writable-paths"


def worker(pipe: Pipeline) -> tuple[list[str], list[payload.Entry]]:
    """The facts' worker ([server] worker): the lines of php_server's `worker` block and the
    payload's worker script and worker.json; nothing for classic mode. The script is outside
    the web root, so `match *` sends it every request php_server gets (frankenphp/caddy v1.12.6
    module.go:668-713; without it only a request for the script's own path would match,
    workerconfig.go:177-202); a relative `file` is the embedded app's (workerconfig.go:158)."""
    server = facts(pipe).server
    if server is None:
        return [], []
    script = pipe.settings.builder_dir / "worker" / f"{server.worker}-worker.php"
    if not script.is_file():
        raise BuildError(f"extract: builder/worker/{script.name} is missing (server.worker)")
    lines = [
        "worker {",
        f"\tfile .frankenphp/{script.name}",
        f"\tnum {{$FRANKENPHP_WORKERS:{server.workers}}}",
        "\tmatch *",
        "}",
    ]
    entries = [
        payload.Entry(f".frankenphp/{script.name}", "file", script.read_bytes()),
        payload.Entry(
            ".frankenphp/worker.json",
            "file",
            app_facts.worker_json(facts(pipe), pipe.settings.docroot),
        ),
    ]
    return lines, entries


def caddyfile(pipe: Pipeline) -> bytes:
    """builder/Caddyfile with the docroot setting in every `root webroot` line, the app's
    writable web paths where WRITABLE_WEB_PATHS stands and the facts' worker in php_server."""
    text = (pipe.settings.builder_dir / "Caddyfile").read_text()
    text = text.replace("WRITABLE_WEB_PATHS", writable_web_paths(pipe))
    lines = text.splitlines(keepends=True)
    roots = [i for i, line in enumerate(lines) if line.strip() == "root webroot"]
    if not roots:
        raise BuildError("extract: builder/Caddyfile has no line `root webroot` to set docroot in")
    for i in roots:
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        lines[i] = f"{indent}root {pipe.settings.docroot}\n"
    block, _ = worker(pipe)
    if block:
        opening = [i for i, line in enumerate(lines) if line.strip() == "php_server {"]
        if len(opening) != 1:
            raise BuildError("extract: builder/Caddyfile needs one `php_server {` for the worker")
        at = opening[0]
        indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())] + "\t"
        lines[at + 1 : at + 1] = [f"{indent}{line}\n" for line in block]
    return "".join(lines).encode()


def config_entries(pipe: Pipeline, php_base: bytes) -> list[payload.Entry]:
    """The embedded configuration, under .frankenphp/ of the app."""
    settings = pipe.settings
    missing = [n for n in CONFIG_FILES if not (settings.builder_dir / n).is_file()]
    if missing:
        raise BuildError(f"extract: builder/{missing[0]} is missing (the binary embeds it)")
    made = {
        "Caddyfile": caddyfile(pipe),
        "php.ini": php_ini(pipe, php_base),
        "app-path.php": (settings.builder_dir / "app-path.php").read_bytes(),
        "links": app_facts.links_file(facts(pipe)),
    }
    entries = [payload.Entry(f".frankenphp/{name}", "file", data) for name, data in made.items()]
    return entries + worker(pipe)[1]


def config_key(pipe: Pipeline) -> str:
    """What the embedded configuration is made from (not the base's part: the image ID has it)."""
    digest = hashlib.sha256()
    for name in CONFIG_FILES:
        path = pipe.settings.builder_dir / name
        digest.update(pipe.hashes.sha256(path).encode() if path.is_file() else b"missing")
    found = facts(pipe)
    digest.update(app_facts.links_file(found))
    digest.update(f"{pipe.settings.docroot}\0{found.php_ini}\0".encode())
    for entry in worker(pipe)[1]:
        data = entry.source if isinstance(entry.source, bytes) else b""
        digest.update(entry.arcname.encode() + b"\0" + hashlib.sha256(data).digest())
    digest.update(b"payload-v1")
    return digest.hexdigest()


def why(pipe: Pipeline) -> str | None:
    pending = archive.why(pipe)
    if pending:  # the app moves first: say what that will cost here
        return (
            f"the app will be archived again ({pending}), then appended to the base binary of "
            "the embed image: no link, no compile, no image build (unless composer.json or "
            "composer.lock change, which rebuild the embed image's dependencies first)"
        )
    settings = pipe.settings
    record = pipe.read_record(RECORD)
    image = embed.image_id(pipe)
    content = archive.content_key(pipe)
    if record is None:
        return "the binary was never made"
    if record.get("image_id") != image:
        return (
            f"embed image changed: {record.get('image_id', '')[7:19]} -> {image[7:19]}: the "
            "base binary and the dependencies are copied out again and the app appended"
        )
    if record.get("content_key") != content:
        return (
            "the app changed (package/): it is appended to the same base binary again "
            "(no link, no compile, no image build)"
        )
    if record.get("config_key") != config_key(pipe):
        return (
            "the embedded configuration changed (Caddyfile, php.ini, the facts' links, worker "
            "or docroot)"
        )
    if not settings.binary.exists():
        return f"{settings.binary.relative_to(settings.root)} is missing"
    if pipe.hashes.sha256(settings.binary) != record.get("sha256"):
        return f"{settings.binary.relative_to(settings.root)} was modified since it was made"
    return None


def run(pipe: Pipeline) -> None:
    settings = pipe.settings
    started = time.monotonic()
    image = embed.image_id(pipe)
    record = archive.archived(pipe)
    archive.check_app(pipe)
    checked_facts(pipe)
    found = parts(pipe, image)
    entries = list(payload.tree_entries(settings.package_dir))
    clash = sorted(
        e.arcname for e in entries if e.kind != "dir" and e.arcname in found.names
    ) + sorted(e.arcname for e in entries if e.arcname.split("/")[0] == ".frankenphp")
    if clash:
        raise BuildError(
            f"extract: the app has {', '.join(clash[:5])}, which the build provides "
            "(vendor/ from its lock, .frankenphp/ from the builder); remove it from the app"
        )
    entries += config_entries(pipe, found.php_base)
    epoch = int(record.get("source_date_epoch", "0") or 0)
    pipe.drop_record(RECORD)
    dest = settings.binary
    dest.parent.mkdir(parents=True, exist_ok=True)
    trailer = payload.append(
        found.base, lambda out: payload.write_payload(out, entries, epoch, tail=found.deps), dest
    )
    sha256 = pipe.hashes.sha256(dest)
    pipe.write_record(
        RECORD,
        {
            "image_id": image,
            "content_key": archive.content_key(pipe),
            "config_key": config_key(pipe),
            "sha256": sha256,
            "payload_sha256": trailer.hexdigest,
        },
    )
    size = dest.stat().st_size
    print(
        f"extract: {dest.relative_to(settings.root)} = base binary of {short_id(image)} + the app "
        f"({trailer.size / 1e6:.1f} MB payload, {size / 1e6:.1f} MB in all, sha256 "
        f"{sha256[:12]}) in {time.monotonic() - started:.1f}s"
    )


DOC = "the app appended to the embed image's base binary (key: embed image, app, configuration)"


def task(pipe: Pipeline) -> TaskDict:
    return command_task(pipe, DOC, lambda: run(pipe), lambda: why(pipe), ["archive", "embed"])
