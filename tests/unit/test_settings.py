"""Settings come from one place with a fixed precedence: command line, environment,
[tool.durango], defaults. No engine needed."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tasks.core.errors import ConfigError
from tasks.core.settings import Settings, load_settings, markdown_table, parse_statuses


def project(tmp_path: Path, table: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(f"[tool.durango]\n{table}\n")
    return tmp_path


def test_defaults_apply_without_configuration(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, {}, {})
    assert settings.source == tmp_path / "../durango-pg"
    assert settings.ref == "HEAD"
    assert settings.binary_path == "/go/src/app/dist/frankenphp-linux-{arch}"


def test_command_line_beats_environment_beats_pyproject(tmp_path: Path) -> None:
    root = project(tmp_path, 'ref = "from-pyproject"\nbase_image = "pyproject-base"')
    env = {"DURANGO_REF": "from-env", "DURANGO_EMBED_IMAGE": "env-app"}
    settings = load_settings(root, {"ref": "from-cli"}, env)
    assert settings.ref == "from-cli"
    assert settings.embed_image == "env-app"
    assert settings.base_image == "pyproject-base"
    assert load_settings(root, {}, env).ref == "from-env"
    assert load_settings(root, {}, {}).ref == "from-pyproject"


def test_build_args_from_table_environment_and_command_line(tmp_path: Path) -> None:
    root = project(tmp_path, 'base_args = { PHP_VERSION = "8.3.1" }')
    assert load_settings(root, {}, {}).base_args == {"PHP_VERSION": "8.3.1"}
    env = {"DURANGO_BASE_ARGS": "PHP_VERSION=8.3.2,EXTRA=1"}
    assert load_settings(root, {}, env).base_args == {"PHP_VERSION": "8.3.2", "EXTRA": "1"}
    cli = load_settings(root, {"base_args": "PHP_VERSION=8.3.3"}, env)
    assert cli.base_args == {"PHP_VERSION": "8.3.3"}


def test_relative_source_is_relative_to_the_project(tmp_path: Path) -> None:
    assert load_settings(tmp_path, {"source": "apps/shop"}, {}).source == tmp_path / "apps/shop"
    assert load_settings(tmp_path, {"source": "/srv/app"}, {}).source == Path("/srv/app")


@pytest.mark.parametrize(
    ("table", "cli", "message"),
    [
        ('sorce = "x"', {}, "[tool.durango]: unknown setting sorce; did you mean source?"),
        ("", {"refs": "v1"}, "command line: unknown setting refs; did you mean ref?"),
        ("ref = 3", {}, "ref must be a string"),
        ("", {"base_args": "NOVALUE"}, "not of the form NAME=value"),
        ("ref = [", {}, "pyproject.toml"),
    ],
)
def test_bad_configuration_is_named(
    tmp_path: Path, table: str, cli: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(project(tmp_path, table), cli, {})


def test_builder_profile_picks_dockerfile_and_runtime_base_unless_set(tmp_path: Path) -> None:
    static = load_settings(tmp_path, {}, {})  # production: upstream's gnu builder, glibc runtime
    assert (static.base_dockerfile, static.runtime_base) == (
        "base-build.Dockerfile",
        "debian:bookworm-slim",
    )
    musl = load_settings(tmp_path, {"builder": "static-musl", "base_args": "PHP_VERSION=8.3.1"}, {})
    assert musl.base_args["SPC_LIBC"] == "musl" and musl.base_args["PHP_VERSION"] == "8.3.1"
    assert musl.runtime_base == "alpine:3.23"
    local = load_settings(tmp_path, {"builder": "local"}, {})
    assert local.base_dockerfile == "base-local.Dockerfile"
    assert local.runtime_base == "debian:bookworm-slim"
    pinned = load_settings(tmp_path, {"builder": "local", "runtime_base": "my/base:1"}, {})
    assert pinned.runtime_base == "my/base:1"
    with pytest.raises(ConfigError, match="builder 'fast' is not a profile"):
        load_settings(tmp_path, {"builder": "fast"}, {})


def test_values_are_typed_when_loaded(tmp_path: Path) -> None:
    root = project(tmp_path, 'backup_keep = "3"\nregistry_required = true\nbackup_dir = "b"')
    settings = load_settings(root, {"composer_packagist": "no"}, {"DURANGO_EMBED_NO_CACHE": "yes"})
    assert settings.backup_keep == 3
    assert settings.registry_required is True
    assert settings.composer_packagist is False
    assert settings.embed_no_cache is True
    assert settings.backup_dir == root / "b"
    assert settings.env_file == root / "orangescrum-ee/.env"


@pytest.mark.parametrize(
    ("cli", "env", "message"),
    [
        ({"backup_keep": "0"}, {}, "backup_keep must be a whole number of at least 1, not '0'"),
        ({"backup_keep": "seven"}, {}, "backup_keep must be a whole number of at least 1"),
        ({"registry_required": "maybe"}, {}, "registry_required must be yes or no"),
        (
            {},
            {"DURANGO_REFF": "v1"},
            "environment DURANGO_*: unknown setting reff; did you mean ref?",
        ),
        (
            {"confirm": "yes"},
            {},
            "confirm is not a setting; give it per run: doit restore --confirm",
        ),
        ({}, {"DURANGO_DROP_DATABASE": "yes"}, "doit restore --confirm --drop-database"),
        ({"health_path": "home/healthcheck"}, {}, "health_path must start with /"),
        ({"docroot": "../up"}, {}, "docroot must be a folder inside the app"),
        ({"health_status": "200-99"}, {}, "'200-99' is not an HTTP status range"),
        (
            {"composer_repository": "https://ci:tok@satis.example.invalid"},
            {},
            "composer_repository must not carry credentials",
        ),
    ],
)
def test_values_that_cannot_work_are_refused_with_one_clear_line(
    tmp_path: Path, cli: dict[str, str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(tmp_path, cli, env)


def test_consent_in_pyproject_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("confirm is not a setting")):
        load_settings(project(tmp_path, 'confirm = "yes"'), {}, {})


def test_health_status_ranges() -> None:
    assert parse_statuses("200-399, 503") == [(200, 399), (503, 503)]


def test_the_readme_settings_table_is_the_one_the_fields_declare() -> None:
    """Each setting declares its parser and help text on its field; the README's table is
    generated from them (`python3 -m tasks.core.settings`), so it cannot drift."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start, end = "<!-- settings table: python3 -m tasks.core.settings -->\n", "<!-- end -->"
    assert start in readme, "the README lost its settings table"
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == markdown_table()
    for field in dataclasses.fields(Settings):
        if field.name != "root":
            assert field.metadata["help"] and callable(field.metadata["parse"]), field.name
