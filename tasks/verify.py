"""verify: the extracted binary is a working FrankenPHP with the configured PHP, and serves the app.

Runs the binary itself (version, build-info, list-modules, a php-cli probe script, php-server on
a free loopback port) and writes `<binary>.manifest.json`: what was built, from what, with which
versions. The manifest doubles as the record: verify is up to date while it describes the binary.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks import archive, base, embed
from tasks.content import atomic_write_text
from tasks.errors import DurangoError
from tasks.images import KEY_LABEL
from tasks.pipeline import Pipeline, StageCheck, action

# Run as a script file: with an embedded app, `php-cli -r CODE` is taken for a path in the app.
PHP_PROBE = (
    "<?php echo json_encode(['php' => PHP_VERSION, 'zts' => PHP_ZTS, "
    "'extensions' => get_loaded_extensions()]);\n"
)
# Names get_loaded_extensions() reports differently from the build's extension list.
_ALIASES = {"zend opcache": "opcache"}


class VerifyError(DurangoError):
    """A check of the binary failed; the message carries the binary's own output."""


def manifest_path(pipe: Pipeline) -> Path:
    return pipe.settings.binary.with_name(pipe.settings.binary.name + ".manifest.json")


def why(pipe: Pipeline) -> str | None:
    binary = pipe.settings.binary
    if not binary.exists():
        return "there is no binary to verify yet"
    try:
        manifest = json.loads(manifest_path(pipe).read_text())
    except (OSError, ValueError):
        return "the binary was never verified"
    if manifest.get("sha256") != pipe.hashes.sha256(binary):
        return "the binary changed since it was verified"
    return None


def run_binary(binary: Path, *args: str, timeout: float = 60) -> str:
    try:
        done = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except OSError as exc:
        raise VerifyError(f"cannot run {binary.name}: {exc}") from None
    except subprocess.TimeoutExpired:
        command = " ".join(args)
        raise VerifyError(f"`{binary.name} {command}` did not finish in {timeout}s") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        if "error while loading shared libraries" in output:
            output += (
                "\n(the local profile's binary links Debian bookworm libraries: install the "
                "packages listed in orangescrum-ee/debian-runtime-packages.txt)"
            )
        raise VerifyError(f"`{binary.name} {' '.join(args)}` exited {done.returncode}:\n{output}")
    return done.stdout


def expected_extensions(pipe: Pipeline) -> list[str]:
    """The PHP_EXTENSIONS list the base image was built with (the Dockerfile is the source)."""
    attrs = pipe.engine.image_attrs(embed.image_id(pipe)) or {}
    for entry in (attrs.get("Config") or {}).get("Env") or []:
        name, _, value = entry.partition("=")
        if name == "PHP_EXTENSIONS":
            return sorted(e.strip().lower() for e in value.split(",") if e.strip())
    return []


def caddy_version(build_info: str) -> str:
    """The Caddy module version from `build-info` (Go's `dep <module> <version> <sum>` lines)."""
    for line in build_info.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "github.com/caddyserver/caddy/v2":
            return fields[2]
    return "unknown"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_http(pipe: Pipeline, binary: Path) -> dict[str, Any]:
    """Start php-server on a free loopback port and ask the app's health endpoint.

    No database is configured here, so the app may rightly answer 503; what matters is that
    PHP ran the embedded app and answered with its JSON.
    """
    import urllib.error  # only when verifying: keeps no-op runs from loading the HTTP stack
    import urllib.request

    settings = pipe.settings
    port = free_port()
    url = f"http://127.0.0.1:{port}{settings.health_path}"
    env = {**os.environ, "DB_HOST": "127.0.0.1", "DB_PORT": "1", "DB_NAME": "verify"}
    server = subprocess.Popen(
        [str(binary), "php-server", "--listen", f"127.0.0.1:{port}", "--root", settings.docroot],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    status, body = response.status, response.read().decode(errors="replace")
                break
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read().decode(errors="replace")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    output = server.communicate()[0]
                    raise VerifyError(f"php-server did not answer on {url}:\n{output}") from None
                time.sleep(0.2)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    where = f"GET {settings.health_path} answered {status}"
    try:
        answer = json.loads(body)
    except ValueError:
        raise VerifyError(f"{where} without JSON: {body[:300]}") from None
    if status not in (200, 503):
        raise VerifyError(f"{where}: {body[:300]}")
    return {"url_path": settings.health_path, "status": status, "body": answer}


def run(pipe: Pipeline) -> None:
    settings = pipe.settings
    binary = settings.binary
    started = time.monotonic()
    version = run_binary(binary, "version").strip()
    if "FrankenPHP" not in version:
        raise VerifyError(f"`version` does not name FrankenPHP: {version}")
    build_info = run_binary(binary, "build-info")
    modules = run_binary(binary, "list-modules").split()
    if "frankenphp" not in modules:
        raise VerifyError("`list-modules` does not list the frankenphp module")
    with tempfile.TemporaryDirectory(prefix="durango-verify-") as tmp:
        probe = Path(tmp, "probe.php")
        probe.write_text(PHP_PROBE)
        php = json.loads(run_binary(binary, "php-cli", str(probe)))
    loaded = sorted({_ALIASES.get(e.lower(), e.lower()) for e in php["extensions"]})
    expected = expected_extensions(pipe)
    missing = [e for e in expected if e not in loaded]
    if missing:
        raise VerifyError(f"PHP lacks configured extension(s) {', '.join(missing)}")
    http = check_http(pipe, binary)
    source = archive.resolve_source(pipe)
    base_inputs = base.inputs(pipe)
    manifest = {
        "binary": str(binary.relative_to(settings.root)),
        "sha256": pipe.hashes.sha256(binary),
        "size": binary.stat().st_size,
        "source": {"url": source.url, "commit": source.commit, "subdir": source.subdir},
        "builder": settings.builder,
        "keys": {
            "archive": archive.content_key(pipe),
            "base": base_inputs.key,
            "embed": (pipe.engine.image_attrs(embed.image_id(pipe)) or {})
            .get("Config", {})
            .get("Labels", {})
            .get(KEY_LABEL),
        },
        "base_image_id": base.image_id(pipe),
        "embed_image_id": embed.image_id(pipe),
        "versions": {
            "frankenphp": version,
            "php": php["php"],
            "php_zts": bool(php["zts"]),
            "caddy": caddy_version(build_info),
        },
        "extensions": loaded,
        "http_check": http,
        "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(manifest_path(pipe), json.dumps(manifest, indent=2) + "\n")
    print(
        f"verify: {version}; PHP {php['php']} with {len(loaded)} extensions; "
        f"GET {http['url_path']} -> {http['status']} ({time.monotonic() - started:.1f}s); "
        f"manifest {manifest_path(pipe).relative_to(settings.root)}"
    )


def task(pipe: Pipeline) -> dict[str, Any]:
    return {
        "doc": "run the binary's checks (version, modules, PHP, HTTP) and write its manifest",
        "actions": [action(pipe, lambda: run(pipe))],
        "uptodate": [StageCheck(pipe, lambda: why(pipe))],
        "task_dep": ["extract"],
        "verbosity": 2,
    }
