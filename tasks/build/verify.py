"""verify: the extracted binary is a working FrankenPHP with the configured PHP, and serves the app.

Runs the binary itself, as production does and with nothing set for it (no PHPRC): version,
build-info, list-modules, a php-cli probe (exactly the configured extensions, the embedded
php.ini in force), then the embedded Caddyfile server (what the entrypoint starts) on a free
loopback port, asked for the health path. Writes `<binary>.manifest.json`: what was built, from
what, with which versions. The manifest doubles as the record: verify is up to date while it
describes the binary.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from tasks.build import archive, base, embed, runtime
from tasks.build.app import facts, health_path
from tasks.build.image_stage import built_image_id
from tasks.build.source import resolve_source
from tasks.core.errors import DurangoError, FormatError, VerifyError
from tasks.core.files import atomic_write_text
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.core.settings import parse_statuses
from tasks.formats import payload
from tasks.formats.elf import linkage

# Run as a script file: with an embedded app, `php-cli -r CODE` is taken for a path in the app.
PHP_PROBE = (
    "<?php echo json_encode(['php' => PHP_VERSION, 'zts' => PHP_ZTS, "
    "'extensions' => get_loaded_extensions(), 'ini' => php_ini_loaded_file(), "
    "'upload_max_filesize' => ini_get('upload_max_filesize')]);\n"
)
# Names get_loaded_extensions() reports differently from the build's extension list.
_ALIASES = {"zend opcache": "opcache"}
# Always part of PHP (or of the FrankenPHP SAPI), whatever the extension list says.
_CORE = {"core", "date", "hash", "json", "pcre", "random", "reflection", "spl", "standard"}
_CORE |= {"frankenphp"}
# Loaded because a listed extension needs them.
_IMPLIED = {
    "libxml": {"dom", "simplexml", "soap", "xml", "xmlreader", "xmlwriter", "xsl"},
    "mysqlnd": {"mysqli", "pdo_mysql"},
}


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


# Where verify's runs of the binary extract the app and keep its data: a folder of this run,
# removed afterwards (production_env points the binary at it).
_SCRATCH: list[Path] = []


def run_binary(binary: Path, *args: str, timeout: float = 60) -> str:
    try:
        done = subprocess.run(
            [str(binary), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=production_env(),
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
    found = pipe.engine.image(embed.image_id(pipe))
    value = found.env.get("PHP_EXTENSIONS", "") if found else ""
    return sorted(e.strip().lower() for e in value.split(",") if e.strip())


def check_extensions(loaded: list[str], expected: list[str]) -> None:
    """The binary's PHP has exactly the configured extensions (besides PHP's core and what a
    listed extension pulls in)."""
    if not expected:
        return
    missing = [e for e in expected if e not in loaded]
    if missing:
        raise VerifyError(f"PHP lacks configured extension(s) {', '.join(missing)}")
    implied = {name for name, needs in _IMPLIED.items() if needs & set(expected)}
    extra = [e for e in loaded if e not in set(expected) | _CORE | implied]
    if extra:
        raise VerifyError(
            f"PHP has extension(s) {', '.join(extra)} that php_extensions does not list"
        )


def binary_linkage(binary: Path) -> dict[str, object]:
    """static, or the libraries the loader must find (the runtime stage checks its image has
    them)."""
    try:
        return linkage(binary)
    except FormatError as exc:
        raise VerifyError(str(exc)) from None


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


def production_env() -> dict[str, str]:
    """The environment of a bare run: no PHPRC (the binary must find its php.ini by itself); the
    app extracted into this run's scratch folder, not the user's cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("PHPRC", "PHP_INI_SCAN_DIR")}
    if _SCRATCH:
        env["FRANKENPHP_APP_CACHE"] = str(_SCRATCH[0] / "cache")
        env["FRANKENPHP_DATA_DIR"] = str(_SCRATCH[0] / "data")
    return env


def check_http(pipe: Pipeline, binary: Path) -> dict[str, object]:
    """Start the embedded Caddyfile server (what production runs) on a free loopback port and
    ask the health path; its status must be one `health_status` accepts.

    No database is configured here, so an app whose health check reaches its database rightly
    answers 503; the default `health_status` (200-399,503) accepts that.
    """
    import urllib.error  # only when verifying: keeps no-op runs from loading the HTTP stack
    import urllib.request

    settings = pipe.settings
    app_dir = run_binary(binary, "php-cli", ".frankenphp/app-path.php").strip()
    caddyfile = Path(app_dir) / ".frankenphp" / "Caddyfile"
    port = free_port()
    health = health_path(pipe)
    url = f"http://127.0.0.1:{port}{health}"
    env = {
        **production_env(),
        # No database here (port 1 refuses at once), a throw-away salt; verify_env adds to these.
        "DB_HOST": "127.0.0.1",
        "DB_PORT": "1",
        "DB_NAME": "verify",
        "SECURITY_SALT": secrets.token_hex(32),
        **settings.verify_env,
        "SERVER_PORT": str(port),
        "SERVER_BIND": "127.0.0.1",
    }
    server = subprocess.Popen(
        [str(binary), "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
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
                    raise VerifyError(
                        f"the embedded server did not answer on {url}:\n{output}"
                    ) from None
                time.sleep(0.2)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    accepted = parse_statuses(settings.health_status)
    if not any(low <= status <= high for low, high in accepted):
        raise VerifyError(
            f"GET {health} through the embedded Caddyfile answered {status}, not "
            f"one of health_status {settings.health_status}: {body[:300]}"
        )
    return {"url_path": health, "status": status, "body": body[:2000]}


def check_payload(binary: Path) -> dict[str, object]:
    """The appended app reads back whole: its sha256 is the trailer's."""
    try:
        trailer = payload.verify(binary)
    except FormatError as exc:
        raise VerifyError(str(exc)) from None
    return {"sha256": trailer.hexdigest, "size": trailer.size, "offset": trailer.offset}


def programs(pipe: Pipeline) -> dict[str, str]:
    """Each program the app's facts say it runs, and where the runtime image has it; when the
    runtime image of the current inputs is not built yet, say so."""
    wanted = facts(pipe).programs
    if not wanted:
        return {}
    try:
        image = built_image_id(pipe.engine, runtime.inputs(pipe))
    except DurangoError:
        unknown = "unknown (the runtime image is not built yet: doit runtime)"
        return dict.fromkeys(wanted, unknown)
    found = runtime.programs_in(pipe, image)
    return {name: where or "MISSING from the runtime image" for name, where in found.items()}


def run(pipe: Pipeline) -> None:
    with tempfile.TemporaryDirectory(prefix="durango-verify-") as scratch:
        _SCRATCH[:] = [Path(scratch)]
        try:
            _run(pipe)
        finally:
            _SCRATCH.clear()
            # the binary leaves its extraction read-only: make it removable
            for folder, dirs, _files in os.walk(scratch):
                for name in dirs:
                    os.chmod(os.path.join(folder, name), 0o700)


def _run(pipe: Pipeline) -> None:
    settings = pipe.settings
    binary = settings.binary
    started = time.monotonic()
    appended = check_payload(binary)
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
    check_extensions(loaded, expected_extensions(pipe))
    if not php["ini"] or not php["ini"].endswith("/.frankenphp/php.ini"):
        raise VerifyError(
            f"the embedded php.ini is not in force without PHPRC (loaded: {php['ini'] or 'none'})"
        )
    http = check_http(pipe, binary)
    source = resolve_source(pipe)
    base_inputs = base.inputs(pipe)
    found_programs = programs(pipe)
    manifest = {
        "binary": str(binary.relative_to(settings.root)),
        "sha256": pipe.hashes.sha256(binary),
        "size": binary.stat().st_size,
        "source": {"url": source.url, "commit": source.commit, "subdir": source.subdir},
        "builder": settings.builder,
        "keys": {
            "archive": archive.content_key(pipe),
            "base": base_inputs.key,
            "embed": embed.inputs(pipe).key,
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
        "linkage": binary_linkage(binary),
        "payload": appended,
        "programs": found_programs,
        "http_check": http,
        "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(manifest_path(pipe), json.dumps(manifest, indent=2) + "\n")
    for name, where in found_programs.items():
        print(f"verify: the app runs {name}: {where}")
    print(
        f"verify: {version}; PHP {php['php']} with {len(loaded)} extensions; "
        f"GET {http['url_path']} -> {http['status']} ({time.monotonic() - started:.1f}s); "
        f"manifest {manifest_path(pipe).relative_to(settings.root)}"
    )


DOC = "run the binary's checks (version, modules, PHP, HTTP) and write its manifest"


def task(pipe: Pipeline) -> TaskDict:
    return command_task(pipe, DOC, lambda: run(pipe), lambda: why(pipe), ["extract"])
