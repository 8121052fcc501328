"""The app's deployment facts (orangescrum-ee/app.toml): what the bundle must know about the app it
runs, as data, so that no code names an app's files. Read and checked here, once; the pipeline
then hands each consumer the form it reads:

- the extract stage: the links file inside the payload (`.frankenphp/links`: which app paths
  live in the data folder, on volumes) and the app's php.ini limits;
- the runtime stage: `app-facts.sh` (sourced by the entrypoint) and `app-facts.json` (read by the
  PHP that writes the app's local config), both generated into the runtime image;
- `doit verify`: the external programs the app runs.

Every problem is one line naming the key, before anything is built.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tasks.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_JOB = re.compile(r"[a-z][a-z0-9_-]{0,30}\Z")
_PLUGIN = re.compile(r"[A-Za-z0-9_/]+\Z")
_PROGRAM = re.compile(r"[A-Za-z0-9_.+-]+\Z|/[A-Za-z0-9_./+-]+\Z")
# cron fields: minute hour day-of-month month day-of-week, each *, n, a-b, */n, a-b/n or lists
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


@dataclass(frozen=True)
class Link:
    """An app path that lives in the data folder: `data` is relative to FRANKENPHP_DATA_DIR."""

    path: str
    data: str
    kind: str  # "dir" or "file"


@dataclass(frozen=True)
class Job:
    name: str
    schedule: str
    command: str  # arguments to the app's console
    timeout: int  # seconds; 0: none


@dataclass(frozen=True)
class Facts:
    console: str = "bin/cake.php"
    health_path: str = "/healthz"
    config_template: str = ""
    config_output: str = ""
    config_replace: Mapping[str, str] = field(default_factory=dict)
    marker_path: str = ""
    marker_content: str = ""
    plugins: tuple[str, ...] | None = None  # None: discovered from plugins/*/config/Migrations
    migration_args: tuple[str, ...] = ()
    sentinel_table: str = ""
    seed_before: tuple[str, ...] = ()
    seed_after: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    log_files: tuple[str, ...] = ()
    jobs: tuple[Job, ...] = ()
    php_ini: str = ""
    programs: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)


def _app_path(where: str, value: object, *, allow_empty: bool = False) -> str:
    """A clean relative path inside the app."""
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ConfigError(f"{where} must be a path inside the app, not {value!r}")
    if not value:
        return value
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or str(path) != value.rstrip("/"):
        raise ConfigError(f"{where}: {value!r} is not a clean path inside the app")
    return str(path)


def _strings(where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)


def _table(data: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table")
    return value


def check_schedule(where: str, schedule: str) -> None:
    """Five cron fields, each within its range; one line naming the bad field."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ConfigError(f"{where}: schedule {schedule!r} needs 5 fields (min hour day month dow)")
    for text, (low, high), name in zip(
        fields, _CRON_RANGES, ("minute", "hour", "day", "month", "weekday"), strict=True
    ):
        for part in text.split(","):
            base, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) < 1):
                raise ConfigError(f"{where}: {name} step in {schedule!r} is not a whole number")
            if base == "*":
                continue
            first, _, last = base.partition("-")
            numbers = [first, last] if last else [first]
            if not all(n.isdigit() and low <= int(n) <= high for n in numbers):
                raise ConfigError(
                    f"{where}: {name} {part!r} in {schedule!r} is outside {low}-{high}"
                )


def parse(text: str, origin: str = "app.toml") -> Facts:
    """The facts from TOML text; ConfigError with one line per problem kind."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    known = {"app", "local_config", "install_marker", "migrations", "seed", "paths", "logs"}
    known |= {"jobs", "php", "programs", "environment"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{origin}: unknown table(s) {', '.join(unknown)}; known: {sorted(known)}"
        )
    app = _table(data, "app")
    config = _table(data, "local_config")
    marker = _table(data, "install_marker")
    migrations = _table(data, "migrations")
    seed = _table(data, "seed")
    replace = config.get("replace", {})
    if not isinstance(replace, dict) or not all(isinstance(v, str) for v in replace.values()):
        raise ConfigError(f"{origin}: local_config.replace must map placeholders to strings")
    plugins_value = migrations.get("plugins", "discover")
    plugins = None if plugins_value == "discover" else _strings("migrations.plugins", plugins_value)
    for plugin in plugins or ():
        if not _PLUGIN.match(plugin):
            raise ConfigError(f"{origin}: migrations.plugins: {plugin!r} is not a plugin name")
    sentinel = str(seed.get("sentinel_table", ""))
    if sentinel and not _TABLE.match(sentinel):
        raise ConfigError(f"{origin}: seed.sentinel_table {sentinel!r} is not a table name")
    links = []
    for path, spec in _table(data, "paths").items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{origin}: paths.{path!r} must be a table {{ data, kind }}")
        kind = spec.get("kind", "dir")
        if kind not in ("dir", "file"):
            raise ConfigError(f"{origin}: paths.{path!r}: kind must be dir or file, not {kind!r}")
        target = _app_path(f"{origin}: paths.{path!r}.data", spec.get("data", path))
        links.append(Link(_app_path(f"{origin}: paths", path), target, str(kind)))
    jobs = []
    for name, spec in _table(data, "jobs").items():
        if not _JOB.match(name) or not isinstance(spec, dict):
            raise ConfigError(f"{origin}: jobs.{name}: a lower-case name and a table")
        schedule, command = spec.get("schedule"), spec.get("command")
        if not isinstance(schedule, str) or not isinstance(command, str) or not command.strip():
            raise ConfigError(f"{origin}: jobs.{name} needs a schedule and a command")
        check_schedule(f"{origin}: jobs.{name}", schedule)
        timeout = spec.get("timeout", 0)
        if not isinstance(timeout, int) or timeout < 0:
            raise ConfigError(f"{origin}: jobs.{name}.timeout must be whole seconds")
        jobs.append(Job(name, " ".join(schedule.split()), command.strip(), timeout))
    programs = _strings(f"{origin}: programs.exec", _table(data, "programs").get("exec", []))
    for program in programs:
        if not _PROGRAM.match(program):
            raise ConfigError(f"{origin}: programs.exec: {program!r} is not a program name")
    environment = _table(data, "environment")
    for name, value in environment.items():
        if not _NAME.match(name) or not isinstance(value, str):
            raise ConfigError(f'{origin}: environment.{name} must be NAME = "value"')
    template = _app_path(
        f"{origin}: local_config.template", config.get("template", ""), allow_empty=True
    )
    output = _app_path(f"{origin}: local_config.output", config.get("output", ""), allow_empty=True)
    if bool(template) != bool(output):
        raise ConfigError(f"{origin}: local_config needs both template and output")
    health = app.get("health_path", "/healthz")
    if not isinstance(health, str) or not re.fullmatch(
        r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*", health
    ):
        raise ConfigError(f"{origin}: app.health_path must be a URL path starting with /")
    return Facts(
        console=_app_path(f"{origin}: app.console", app.get("console", "bin/cake.php")),
        health_path=health,
        config_template=template,
        config_output=output,
        config_replace={str(k): str(v) for k, v in replace.items()},
        marker_path=_app_path(
            f"{origin}: install_marker.path", marker.get("path", ""), allow_empty=True
        ),
        marker_content=str(marker.get("content", "")),
        plugins=plugins,
        migration_args=_strings(f"{origin}: migrations.args", migrations.get("args", [])),
        sentinel_table=sentinel,
        seed_before=tuple(
            _app_path(f"{origin}: seed.before", p)
            for p in _strings("seed.before", seed.get("before", []))
        ),
        seed_after=tuple(
            _app_path(f"{origin}: seed.after", p)
            for p in _strings("seed.after", seed.get("after", []))
        ),
        links=tuple(links),
        log_files=tuple(
            _app_path(f"{origin}: logs.files", p)
            for p in _strings("logs.files", _table(data, "logs").get("files", []))
        ),
        jobs=tuple(jobs),
        php_ini=_app_path(
            f"{origin}: php.ini", _table(data, "php").get("ini", ""), allow_empty=True
        ),
        programs=programs,
        environment={str(k): str(v) for k, v in environment.items()},
    )


def load(path: Path) -> Facts:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"app facts {path}: {exc.strerror}") from None
    return parse(text, str(path))


def check_against_app(facts: Facts, app: Path, origin: str) -> None:
    """What the facts name exists in the archived app (one line for the first that does not)."""
    wanted = [("app.console", facts.console)]
    if facts.config_template:
        wanted.append(("local_config.template", facts.config_template))
    wanted += [("seed.before", p) for p in facts.seed_before]
    wanted += [("seed.after", p) for p in facts.seed_after]
    if facts.php_ini:
        wanted.append(("php.ini", facts.php_ini))
    for key, rel in wanted:
        if not (app / rel).is_file():
            raise ConfigError(f"{origin}: {key} {rel!r} is not a file of the app")
    for plugin in facts.plugins or ():
        if not (app / "plugins" / plugin / "config" / "Migrations").is_dir():
            raise ConfigError(
                f"{origin}: migrations.plugins names {plugin!r}, but the app has no "
                f"plugins/{plugin}/config/Migrations"
            )


def links_file(facts: Facts) -> bytes:
    """`.frankenphp/links` for the binary: path, data path and kind, tab-separated."""
    lines = ["# app path\tdata path (under FRANKENPHP_DATA_DIR)\tkind"]
    lines += [f"{link.path}\t{link.data}\t{link.kind}" for link in facts.links]
    return ("\n".join(lines) + "\n").encode()


def _quote(value: str) -> str:
    return shlex.quote(value)


def shell(facts: Facts) -> bytes:
    """`app-facts.sh`: the facts as shell assignments the entrypoint sources."""
    jobs = "\n".join(f"{j.name}|{j.schedule}|{j.timeout}|{j.command}" for j in facts.jobs)
    values = {
        "APP_CONSOLE": facts.console,
        "APP_HEALTH_PATH": facts.health_path,
        "APP_LOCAL_CONFIG": facts.config_output,
        "APP_INSTALL_MARKER": facts.marker_path,
        "MIGRATION_PLUGINS": "discover" if facts.plugins is None else " ".join(facts.plugins),
        "MIGRATION_ARGS": " ".join(facts.migration_args),
        "SEED_SENTINEL_TABLE": facts.sentinel_table,
        "SEED_BEFORE": " ".join(facts.seed_before),
        "SEED_AFTER": " ".join(facts.seed_after),
        "APP_LOG_FILES": " ".join(facts.log_files),
        "APP_JOBS": jobs,
        "APP_PROGRAMS": " ".join(facts.programs),
    }
    lines = ["# Generated from the bundle's app facts (app.toml) by the runtime stage."]
    lines += [f"FACT_{name}={_quote(value)}" for name, value in values.items()]
    lines += [f"FACT_ENV_{name}={_quote(value)}" for name, value in facts.environment.items()]
    lines.append(f"FACT_ENV_NAMES={_quote(' '.join(facts.environment))}")
    return ("\n".join(lines) + "\n").encode()


def json_form(facts: Facts) -> bytes:
    """`app-facts.json`: what the PHP side reads (the local config and the install marker)."""
    data = {
        "local_config": {
            "template": facts.config_template,
            "output": facts.config_output,
            "replace": dict(facts.config_replace),
        },
        "install_marker": {"path": facts.marker_path, "content": facts.marker_content},
    }
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
