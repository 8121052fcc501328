"""The app's deployment facts (orangescrum-ee/app.toml): what the bundle must know about the app it
runs, as data, so that no code names an app's files. Read and checked here, once; the pipeline
then hands each consumer the form it reads:

- the extract stage: the links file inside the payload (`.frankenphp/links`: which app paths
  live in the data folder, on volumes), the app's php.ini limits and, when `[server]` names a
  worker, the worker's `.frankenphp/worker.json`;
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
class Server:
    """`[server] worker`: the app kept booted between requests by a FrankenPHP worker script of
    the builder (builder/worker/<worker>-worker.php), configured by the rest of the table."""

    worker: str  # one of WORKERS
    workers: int = 0  # worker threads; 0: FrankenPHP's default (2 x CPUs)
    max_requests: int = 0  # the worker boots again after this many requests; 0: never
    new_constants: str = "restart"  # a request that define()s constants: "restart" or "keep"
    application: str = "App\\Application"  # the app's HTTP application class
    config_dir: str = "config"
    front_controller: str = "index.php"  # under the web root: what SCRIPT_NAME names
    boot_url_env: str = ""  # the boot sees a request to this URL (an environment variable)
    watch: tuple[str, ...] | None = None  # files whose change reboots; None: the file links


WORKERS = ("cakephp",)


@dataclass(frozen=True)
class Facts:
    console: str = ""  # none: no migrations, seeds or jobs to run
    health_path: str = "/healthz"
    loopback_port: int = 0  # the app fetches its own pages over http on this port (0: never)
    config_template: str = ""
    config_output: str = ""
    config_replace: Mapping[str, str] = field(default_factory=dict)
    marker_path: str = ""
    marker_content: str = ""
    plugins: tuple[str, ...] | None = None  # None: discovered from plugins/*/config/Migrations
    migration_args: tuple[str, ...] = ()
    migration_table: str = "phinxlog"  # the app's migration log (applied versions)
    plugin_migration_table: str = "{plugin}_phinxlog"  # a plugin's ({plugin}: its name, snake_case)
    sentinel_table: str = ""
    seed_before: tuple[str, ...] = ()
    seed_after: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    log_files: tuple[str, ...] = ()
    jobs: tuple[Job, ...] = ()
    php_ini: str = ""
    programs: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    server: Server | None = None  # None: classic PHP, the app booted for every request


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


def _log_table(origin: str, migrations: Mapping[str, object], key: str, default: str) -> str:
    """A migration log table's name; a plugin's has `{plugin}` where the plugin's name goes."""
    value = migrations.get(key, default)
    plain = value.replace("{plugin}", "x") if isinstance(value, str) else ""
    if not _TABLE.match(plain) or (key.startswith("plugin") != ("{plugin}" in str(value))):
        need = " with {plugin} in it" if key.startswith("plugin") else ""
        raise ConfigError(f"{origin}: migrations.{key} must be a table name{need}, not {value!r}")
    return str(value)


def _server(origin: str, table: Mapping[str, object]) -> Server | None:
    """`[server]`: None unless it names a worker; every key checked, one line each."""
    known = {"worker", "workers", "max_requests", "new_constants", "application", "config_dir"}
    known |= {"front_controller", "boot_url_env", "watch"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{origin}: server.{unknown[0]} is not a key; known: {sorted(known)}")
    worker = table.get("worker", "")
    if worker in ("", "none"):
        return None
    if worker not in WORKERS:
        raise ConfigError(f"{origin}: server.worker must be one of {list(WORKERS)}, not {worker!r}")
    counts = {}
    for key in ("workers", "max_requests"):
        value = table.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{origin}: server.{key} must be a whole number >= 0, not {value!r}")
        counts[key] = value
    constants = table.get("new_constants", "restart")
    if constants not in ("restart", "keep"):
        raise ConfigError(f"{origin}: server.new_constants must be restart or keep")
    application = table.get("application", "App\\Application")
    if not isinstance(application, str) or not re.fullmatch(
        r"\\?[A-Za-z_][A-Za-z0-9_]*(\\[A-Za-z_][A-Za-z0-9_]*)*", application
    ):
        raise ConfigError(f"{origin}: server.application must be a PHP class name")
    front = _app_path(
        f"{origin}: server.front_controller", table.get("front_controller", "index.php")
    )
    if not front.endswith(".php"):
        raise ConfigError(f"{origin}: server.front_controller must be a .php file")
    boot_url = table.get("boot_url_env", "")
    if not isinstance(boot_url, str) or (boot_url and not _NAME.match(boot_url)):
        raise ConfigError(f"{origin}: server.boot_url_env must be an environment variable name")
    return Server(
        worker=str(worker),
        workers=counts["workers"],
        max_requests=counts["max_requests"],
        new_constants=str(constants),
        application=application.lstrip("\\"),
        config_dir=_app_path(f"{origin}: server.config_dir", table.get("config_dir", "config")),
        front_controller=front,
        boot_url_env=boot_url,
        watch=None
        if "watch" not in table
        else tuple(
            _app_path(f"{origin}: server.watch", p)
            for p in _strings(f"{origin}: server.watch", table["watch"])
        ),
    )


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
    known |= {"jobs", "php", "programs", "environment", "server"}
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
    console = _app_path(f"{origin}: app.console", app.get("console", ""), allow_empty=True)
    if jobs and not console:
        raise ConfigError(f"{origin}: [jobs] need app.console (the command the jobs run)")
    loopback = app.get("loopback_http_port", 0)
    if not isinstance(loopback, int) or not 0 <= loopback <= 65535:
        raise ConfigError(f"{origin}: app.loopback_http_port must be a port number")
    return Facts(
        console=console,
        health_path=health,
        loopback_port=loopback,
        config_template=template,
        config_output=output,
        config_replace={str(k): str(v) for k, v in replace.items()},
        marker_path=_app_path(
            f"{origin}: install_marker.path", marker.get("path", ""), allow_empty=True
        ),
        marker_content=str(marker.get("content", "")),
        plugins=plugins,
        migration_args=_strings(f"{origin}: migrations.args", migrations.get("args", [])),
        migration_table=_log_table(origin, migrations, "log_table", "phinxlog"),
        plugin_migration_table=_log_table(
            origin, migrations, "plugin_log_table", "{plugin}_phinxlog"
        ),
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
        server=_server(origin, _table(data, "server")),
    )


def load(path: Path) -> Facts:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"app facts {path}: {exc.strerror}") from None
    return parse(text, str(path))


def check_against_app(facts: Facts, app: Path, origin: str) -> None:
    """What the facts name exists in the archived app (one line for the first that does not)."""
    wanted = [("app.console", facts.console)] if facts.console else []
    if facts.config_template:
        wanted.append(("local_config.template", facts.config_template))
    wanted += [("seed.before", p) for p in facts.seed_before]
    wanted += [("seed.after", p) for p in facts.seed_after]
    if facts.php_ini:
        wanted.append(("php.ini", facts.php_ini))
    for key, rel in wanted:
        if not (app / rel).is_file():
            raise ConfigError(f"{origin}: {key} {rel!r} is not a file of the app")
    if facts.server and not (app / facts.server.config_dir).is_dir():
        raise ConfigError(
            f"{origin}: server.config_dir {facts.server.config_dir!r} is not a folder"
        )
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


def worker_json(facts: Facts, docroot: str) -> bytes:
    """`.frankenphp/worker.json`: what the worker script reads at boot ([server] and the web
    root). The watched files default to the app's file links: what it writes at run time."""
    server = facts.server
    if server is None:
        raise ValueError("the facts name no worker")
    watch = server.watch
    if watch is None:
        watch = tuple(link.path for link in facts.links if link.kind == "file")
    data = {
        "application": server.application,
        "boot_url_env": server.boot_url_env,
        "config_dir": server.config_dir,
        "docroot": docroot.strip("/") or ".",
        "front_controller": server.front_controller,
        "max_requests": server.max_requests,
        "new_constants": server.new_constants,
        "watch": list(watch),
    }
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _quote(value: str) -> str:
    return shlex.quote(value)


def shell(facts: Facts) -> bytes:
    """`app-facts.sh`: the facts as shell assignments the entrypoint sources."""
    jobs = "\n".join(f"{j.name}|{j.schedule}|{j.timeout}|{j.command}" for j in facts.jobs)
    values = {
        "APP_CONSOLE": facts.console,
        "APP_HEALTH_PATH": facts.health_path,
        "APP_LOOPBACK_PORT": str(facts.loopback_port),
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
