"""One Settings object for the whole pipeline, built once and passed in.

Precedence, highest first: doit command-line variables (`doit ref=v2.1`), environment
(`DURANGO_REF=v2.1`), the `[tool.durango]` table of pyproject.toml, the defaults below.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Settings:
    """Everything a stage may read about its configuration."""

    root: Path
    source: Path = Path("../durango-pg")
    ref: str = "HEAD"
    builder: str = "static"
    base_image: str = "orangescrum-cloud-base"
    embed_image: str = "orangescrum-cloud-app"
    runtime_image: str = "orangescrum-ee"
    base_dockerfile: str = "base-build.Dockerfile"
    embed_dockerfile: str = "app-embed.Dockerfile"
    base_args: Mapping[str, str] = field(default_factory=dict)
    embed_args: Mapping[str, str] = field(default_factory=dict)
    binary_path: str = "/go/src/app/dist/frankenphp-linux-{arch}"
    runtime_base: str = "alpine:3.20"
    docroot: str = "webroot"
    health_path: str = "/home/healthcheck"
    env_file: Path = Path("orangescrum-ee/.env")
    compose_profiles: str = ""
    compose_project: str = "orangescrum-ee"
    registry: str = ""
    registry_required: str = ""
    backup_dir: str = "backups"
    backup_keep: str = "7"
    restore_from: str = "latest"
    confirm: str = ""
    drop_database: str = ""

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


KEYS = tuple(f.name for f in dataclasses.fields(Settings) if f.name != "root")
_MAPPINGS = {"base_args", "embed_args"}

# Builder profiles: what `builder=<name>` changes unless a key is set explicitly.
#   static: production, upstream static builder (needs its image); Alpine runtime.
#   local:  Debian packages + Go module proxy only; Debian runtime for the dynamic binary.
PROFILES: dict[str, dict[str, str]] = {
    "static": {"base_dockerfile": "base-build.Dockerfile", "runtime_base": "alpine:3.20"},
    "local": {"base_dockerfile": "base-local.Dockerfile", "runtime_base": "debian:bookworm-slim"},
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


def _coerce(key: str, value: Any, origin: str) -> Any:
    if key in _MAPPINGS:
        if isinstance(value, str):
            return parse_args_string(value)
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items()}
        raise ConfigError(f"{origin}: {key} must be a table of NAME = value")
    if not isinstance(value, str):
        raise ConfigError(f"{origin}: {key} must be a string, not {type(value).__name__}")
    return value


def read_pyproject(root: Path) -> dict[str, Any]:
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
        raise ConfigError(
            f"{path}: unknown [tool.durango] key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}"
        )
    return dict(table)


def load_settings(
    root: Path,
    cli_vars: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the four sources into one frozen Settings."""
    cli_vars = cli_vars or {}
    environ = os.environ if environ is None else environ
    unknown = sorted(set(cli_vars) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    values: dict[str, Any] = {}
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
        values.setdefault(key, value)
    if "env_file" in values:
        values["env_file"] = Path(values["env_file"])
    if "source" in values:
        source = Path(os.path.expanduser(values["source"]))
        values["source"] = source if source.is_absolute() else root / source
    else:
        values["source"] = root / Settings.source
    return Settings(root=root, **values)


def cli_vars_from_argv(argv: list[str], get_var: Any) -> dict[str, str]:
    """The `key=value` words doit took from the command line, read back through doit.get_var."""
    names = [word.split("=", 1)[0] for word in argv if "=" in word and not word.startswith("-")]
    found = {}
    for name in names:
        value = get_var(name)
        if value is not None:
            found[name] = value
    return found
