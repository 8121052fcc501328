"""One Settings object for the whole pipeline, built once, typed and checked when it is loaded.

Precedence, highest first: doit command-line variables (`doit ref=v2.1`), environment
(`DURANGO_REF=v2.1`), the `[tool.durango]` table of pyproject.toml, the defaults below. Values
are coerced to the field's type here (booleans, integers, paths resolved against the project),
so no stage ever compares strings or parses numbers. One-shot consents (`--confirm`,
`--drop-database`) are task parameters of `doit restore`, never settings: nothing stored can
approve a destructive step.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from tasks.core.errors import ConfigError
from tasks.core.profiles import PROFILES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


Parser = Callable[[str, object, str], object]  # (key, raw value, origin) -> typed value

_TRUE = {"yes", "true", "1", "on"}
_FALSE = {"no", "false", "0", "off", ""}


def text(key: str, value: object, origin: str) -> object:
    if not isinstance(value, str):
        raise ConfigError(f"{origin}: {key} must be a string, not {type(value).__name__}")
    return value


def flag(key: str, value: object, origin: str) -> object:
    """yes/no, true/false, on/off, 1/0 (any case); a TOML boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{origin}: {key} must be yes or no, not {value!r}")


def count(key: str, value: object, origin: str) -> object:
    """A whole number of at least 1."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number < 1:
        raise ConfigError(f"{origin}: {key} must be a whole number of at least 1, not {value!r}")
    return number


def build_args(key: str, value: object, origin: str) -> object:
    """A TOML table, or `"A=1 B=2"` / `"A=1,B=2"` (command line and environment)."""
    if isinstance(value, str):
        return parse_args_string(value)
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    raise ConfigError(f"{origin}: {key} must be a table of NAME = value")


def words(key: str, value: object, origin: str) -> object:
    """`"A=1 B=x,y"` (space-separated, commas kept: mount options have them) or a TOML table."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if not isinstance(value, str):
        raise ConfigError(f"{origin}: {key} must be NAME=value words or a table")
    found = {}
    for item in value.split():
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"{origin}: {key}: {item!r} is not of the form NAME=value")
        found[name] = text
    return found


def path(key: str, value: object, origin: str) -> object:
    """A path, relative to the project unless absolute (resolved by load_settings)."""
    return text(key, value, origin)


def setting(default: object, help: str, parse: Parser = text) -> Any:
    """A field of Settings that declares its parser and the help text the README table shows."""
    meta = {"help": help, "parse": parse}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Everything a stage may read about its configuration. Each field says how a value is read
    and what it means; `python3 -m tasks.core.settings` prints the README's table from them."""

    root: Path
    # the app: where it is, which commit
    source: Path = setting(
        Path("../durango-pg"),
        "app repository, or a folder inside one (that subtree is archived)",
        path,
    )
    ref: str = setting("HEAD", "branch, tag or commit to build")
    # the builder profile and the images it makes
    builder: str = setting(
        "static", "builder profile: `static`, `static-musl`, `local` or `local-static`"
    )
    base_image: str = setting("orangescrum-cloud-base", "image name of the base stage")
    embed_image: str = setting("orangescrum-cloud-app", "image name of the embed stage")
    runtime_image: str = setting("orangescrum-ee", "image name of the runtime stage")
    base_dockerfile: str = setting(
        "base-build.Dockerfile", "the base stage's Dockerfile in `builder/` (per profile)"
    )
    embed_dockerfile: str = setting(
        "app-embed.Dockerfile", "the embed stage's Dockerfile in `builder/`"
    )
    # what goes into the binary
    base_args: Mapping[str, str] = setting(
        {}, 'build args of the base stage: a TOML table, or `"NAME=value NAME2=value"`', build_args
    )
    embed_args: Mapping[str, str] = setting(
        {}, "build args of the embed stage (same forms)", build_args
    )
    php_extensions: str = setting(
        "",
        "the PHP extensions of the binary (static-php-cli's names: `mysqli`, `pdo_mysql`, "
        "`opcache`, …); empty: the Dockerfile's list",
    )
    binary_path: str = setting(
        "/go/src/app/dist/frankenphp-linux-{arch}",
        "the base binary in the embed image; `{arch}` is the engine's (x86_64, aarch64)",
    )
    runtime_base: str = setting(
        "alpine:3.23", "`RUNTIME_BASE_IMAGE` of the runtime image (per profile)"
    )
    # how the app is served, and what `doit verify` asks of it
    app_facts: Path | None = setting(
        None,
        "the app's deployment facts (docs/APP_FACTS.md); default: the app's own `app.toml` if "
        "it has one, else `orangescrum-ee/app.toml`",
        path,
    )
    docroot: str = setting("webroot", "the web root the embedded Caddyfile serves")
    health_path: str = setting(
        "", "the path `doit verify` asks; default: the facts' app.health_path"
    )
    health_status: str = setting(
        "200-399,503", "the answers `doit verify` accepts (no database is configured there)"
    )
    verify_env: Mapping[str, str] = setting(
        {}, 'extra environment for `doit verify` (`"NAME=value …"`)', build_args
    )
    # the app's Composer dependencies (the embed stage's dependency step)
    composer_repository: str = setting(
        "",
        "where Composer packages come from: a folder of zips, a folder of path packages, or the "
        "URL of a Composer repository",
    )
    composer_packagist: bool = setting(True, "`no`: composer_repository replaces Packagist", flag)
    composer_auth: Path | None = setting(
        None, "a file with the Composer token (a build secret); default `$COMPOSER_AUTH`", path
    )
    embed_network: str = setting("", "`none`: the embed build's steps get no network")
    embed_no_cache: bool = setting(False, "build the embed stage without BuildKit's cache", flag)
    # the deployment bundle; a tenant picks its own env file, compose project and backups
    tenant: str = setting(
        "", "(alias `name`) a tenant's env file, project and backups for up/down/backup/restore"
    )
    env_file: Path = setting(
        Path("orangescrum-ee/.env"), "the env file of `doit up`, `down`, `backup`, `restore`", path
    )
    compose_profiles: str = setting("", "compose profiles of the bundle (`bundled-db`, `queue`)")
    compose_project: str = setting("orangescrum-ee", "the bundle's compose project name")
    # sharing images between machines
    registry: str = setting("", "a registry used as a content-addressed build cache")
    registry_required: bool = setting(False, "`yes`: registry trouble is fatal", flag)
    # housekeeping: `doit prune` keeps this many older images per stage
    keep_images: int = setting(
        3, "`doit prune` keeps this many newest keys per stage besides the current ones", count
    )
    # backups
    backup_dir: Path = setting(Path("backups"), "where backups go", path)
    backup_keep: int = setting(7, "how many backups of each kind are kept", count)
    backup_client_image: str = setting(
        "", "an image whose `pg_dump` is as new as an external server (default: the app image)"
    )
    # tenants on a shared PostgreSQL server
    tenant_connection_limit: int = setting(
        20,
        "connections one tenant's role may hold on the shared server (its CONNECTION LIMIT)",
        count,
    )
    # releases (`doit deploy`, `doit rollback`, docs/RELEASES.md)
    keep_releases: int = setting(
        3,
        "releases besides the serving one whose images `doit prune` keeps (rollback targets)",
        count,
    )
    proxy_image: str = setting(
        "orangescrum-proxy", "image name of the release proxy (HAProxy, orangescrum-ee/proxy/)"
    )
    health_timeout: int = setting(
        180,
        "seconds a new release may take to answer its health path before deploy gives up",
        count,
    )
    drain_timeout: int = setting(
        60, "seconds the old release may take to finish its requests before it is stopped", count
    )
    to: str = setting(
        "", "`doit rollback to=KEY`: the release to go back to (default: the one before)"
    )
    # beyond one host (docs/SWARM.md, docs/KUBERNETES.md)
    replicas: int = setting(
        2, "app replicas of the Swarm stack and the Kubernetes manifests", count
    )
    swarm_stack: str = setting("", "the Swarm stack's name (default: compose_project)")
    swarm_host: str = setting(
        "",
        "the swarm manager's engine (a DOCKER_HOST value) when it is not the engine that builds; "
        "every node must have the images",
    )
    swarm_volume_driver: str = setting(
        "local", "volume driver of the stack's shared volumes (uploads, files, sessions)"
    )
    swarm_volume_options: Mapping[str, str] = setting(
        {},
        "its driver options, `{volume}` replaced by each volume's name: "
        '`"type=nfs o=addr=10.0.0.5,rw,nfsvers=4 device=:/exports/orangescrum/{volume}"`',
        words,
    )
    kube_storage_class: str = setting(
        "", "storage class of the Kubernetes manifests' shared claim (ReadWriteMany)"
    )

    @property
    def builder_dir(self) -> Path:
        return self.root / "builder"

    @property
    def package_dir(self) -> Path:
        return self.root / "package"

    @property
    def bundle_dir(self) -> Path:
        return self.root / "orangescrum-ee"

    @property
    def binary(self) -> Path:
        return self.bundle_dir / "orangescrum-app" / "orangescrum-ee"

    @property
    def state_dir(self) -> Path:
        """Artefact records and the hash cache: what survives a lost .doit.db."""
        return self.root / ".durango"


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "root"}
KEYS = tuple(_FIELDS)
_PATHS = {name for name, f in _FIELDS.items() if f.metadata["parse"] is path}
# Settings that no longer exist, and what replaced them: named when someone still gives one.
_RETIRED = {
    "composer_scripts": (
        "composer_scripts is gone: the dependency step no longer sees the app (an app-only change "
        "must not rebuild it), so the app's post-install-cmd cannot run there; write what it "
        "makes through the app's facts (docs/APP_FACTS.md: local_config, paths) or commit it"
    ),
}
_ONE_SHOT = {
    "confirm": "doit restore --confirm",
    "drop_database": "doit restore --confirm --drop-database",
    "restore_from": "doit restore --from NAME",
}


def parse_args_string(text: str) -> dict[str, str]:
    """`"A=1 B=2"` or `"A=1,B=2"` -> {"A": "1", "B": "2"} (command line and environment form)."""
    result: dict[str, str] = {}
    for item in text.replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"build argument {item!r} is not of the form NAME=value")
        result[name] = value
    return result


def _unknown(names: list[str], origin: str) -> ConfigError:
    """One line per unknown name, with the closest known key (or the task flag) to use."""
    lines = []
    for name in names:
        if name in _RETIRED:
            lines.append(f"{origin}: {_RETIRED[name]}")
            continue
        if name in _ONE_SHOT:
            lines.append(f"{origin}: {name} is not a setting; give it per run: {_ONE_SHOT[name]}")
            continue
        close = difflib.get_close_matches(name, KEYS, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(KEYS)}"
        lines.append(f"{origin}: unknown setting {name}{hint}")
    return ConfigError("\n".join(lines))


def _coerce(key: str, value: object, origin: str) -> object:
    """The value in the field's type (its declared parser), or ConfigError naming its origin."""
    parse: Parser = _FIELDS[key].metadata["parse"]
    return parse(key, value, origin)


def read_pyproject(root: Path) -> dict[str, object]:
    path = root / "pyproject.toml"
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    table = data.get("tool", {}).get("durango", {})
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise _unknown(unknown, f"{path} [tool.durango]")
    return dict(table)


def _check(values: dict[str, object]) -> None:
    """Values that are well typed but cannot work: one clear line each, before any stage runs."""
    problems = []
    health = str(values.get("health_path", Settings.health_path))
    if health and not health.startswith("/"):
        problems.append(f"health_path must start with / (got {health!r}; try '/{health}')")
    docroot = str(values.get("docroot", Settings.docroot))
    parts = Path(docroot).parts
    if (
        not docroot
        or Path(docroot).is_absolute()
        or ".." in parts
        or any(c in docroot for c in "\"'\n #{}")
    ):
        problems.append(
            f"docroot must be a folder inside the app, such as webroot or . (got {docroot!r})"
        )
    try:
        parse_statuses(str(values.get("health_status", Settings.health_status)))
    except ValueError as exc:
        problems.append(str(exc))
    tenant = str(values.get("tenant", ""))
    if tenant and not re.fullmatch(r"[a-z][a-z0-9]{0,29}", tenant):
        problems.append(
            f"tenant {tenant!r} must be a lower-case letter then up to 29 letters or digits"
        )
    repository = str(values.get("composer_repository", ""))
    if "://" in repository and urlsplit(repository).username:
        problems.append(
            "composer_repository must not carry credentials (they would be stored in the image's "
            "build arguments); give them in composer_auth or COMPOSER_AUTH"
        )
    if problems:
        raise ConfigError("\n".join(problems))


def parse_statuses(text: str) -> list[tuple[int, int]]:
    """`"200-399,503"` -> [(200, 399), (503, 503)]: the answers `doit verify` accepts."""
    ranges = []
    for item in text.replace(" ", "").split(","):
        low, _, high = item.partition("-")
        try:
            pair = (int(low), int(high or low))
        except ValueError:
            raise ValueError(f"health_status {text!r}: {item!r} is not a status or range") from None
        if not 100 <= pair[0] <= pair[1] <= 599:
            raise ValueError(f"health_status {text!r}: {item!r} is not an HTTP status range")
        ranges.append(pair)
    return ranges


def load_settings(
    root: Path,
    cli_vars: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the four sources into one frozen, typed Settings."""
    cli_vars = dict(cli_vars or {})
    if "name" in cli_vars:  # `doit tenant-add name=acme` reads better than tenant=acme
        cli_vars.setdefault("tenant", cli_vars.pop("name"))
    environ = os.environ if environ is None else environ
    unknown = sorted(set(cli_vars) - set(KEYS))
    if unknown:
        raise _unknown(unknown, "command line")
    env_names = {name for name in environ if name.startswith("DURANGO_")}
    unknown_env = sorted(n for n in env_names if n[len("DURANGO_") :].lower() not in KEYS)
    if unknown_env:
        raise _unknown([n[len("DURANGO_") :].lower() for n in unknown_env], "environment DURANGO_*")
    values: dict[str, object] = {}
    for key, value in read_pyproject(root).items():
        values[key] = _coerce(key, value, "pyproject.toml [tool.durango]")
    for key in KEYS:
        env_value = environ.get(f"DURANGO_{key.upper()}")
        if env_value is not None:
            values[key] = _coerce(key, env_value, f"DURANGO_{key.upper()}")
    for key, value in cli_vars.items():
        values[key] = _coerce(key, value, f"command line {key}=")
    builder = values.get("builder", Settings.builder)
    if builder not in PROFILES:
        raise ConfigError(f"builder {builder!r} is not a profile; known: {', '.join(PROFILES)}")
    for key, value in PROFILES[builder].items():
        if key == "base_args" and isinstance(value, dict):
            values[key] = {**value, **cast(dict[str, str], values.get(key) or {})}
        else:
            values.setdefault(key, value)
    tenant = str(values.get("tenant", ""))
    if tenant:
        values.setdefault("env_file", f"orangescrum-ee/tenants/{tenant}.env")
        values.setdefault("compose_project", f"orangescrum-{tenant}")
        values.setdefault("backup_dir", f"backups/{tenant}")
    _check(values)
    for key in _PATHS:
        default = _FIELDS[key].default
        raw = values.get(key, default)
        if raw is None or raw == "":
            values[key] = None if key in ("composer_auth", "app_facts") else default
            continue
        path = Path(os.path.expanduser(str(raw)))
        values[key] = path if path.is_absolute() else root / path
    # each value was coerced to its field's type above
    return Settings(root=root, **cast(dict[str, Any], values))


def cli_vars_from_argv(argv: list[str], get_var: Callable[[str], str | None]) -> dict[str, str]:
    """The `key=value` words doit took from the command line, read back through doit.get_var."""
    names = [word.split("=", 1)[0] for word in argv if "=" in word and not word.startswith("-")]
    found = {}
    for name in names:
        value = get_var(name)
        if value is not None:
            found[name] = value
    return found


def _shown(default: object) -> str:
    if isinstance(default, bool):
        return "yes" if default else "no"
    if default in (None, "", {}):
        return "none"
    return f"`{default}`"


def markdown_table() -> str:
    """The README's settings table, from the fields themselves."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, f in _FIELDS.items():
        default = {} if f.default is dataclasses.MISSING else f.default
        rows.append(f"| `{name}` | {_shown(default)} | {f.metadata['help']} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
