"""Worker mode as the facts ask for it: `[server]` checked one line per problem, the embedded
Caddyfile's php_server given the worker block only when a worker is named, the payload given the
worker script and its worker.json, and the extract key moved by both. No engine."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fakes import FakeContainers, FakeImages

from tasks.build import extract
from tasks.core.errors import BuildError, ConfigError
from tasks.core.pipeline import Pipeline
from tasks.core.settings import load_settings
from tasks.formats import app_facts

REPO = Path(__file__).resolve().parents[2]
PATHS = """
[paths]
"logs" = { data = "logs", kind = "dir" }
"webroot/files" = { data = "uploads", kind = "dir" }
"config/smtp.php" = { data = "files/config/smtp.php", kind = "file" }
"""
WORKER = '[server]\nworker = "cakephp"\nworkers = 3\nboot_url_env = "FULL_BASE_URL"\n'


def pipeline(tmp_path: Path, facts: str) -> Pipeline:
    """A project whose builder/ holds the real Caddyfile and worker script."""
    builder = tmp_path / "builder"
    builder.mkdir(parents=True)
    for name in ("Caddyfile", "php.ini", "app-path.php"):
        shutil.copy(REPO / "builder" / name, builder / name)
    shutil.copytree(REPO / "builder" / "worker", builder / "worker")
    (tmp_path / "app.toml").write_text(facts)
    settings = load_settings(tmp_path, {"app_facts": str(tmp_path / "app.toml")}, {})
    return Pipeline(settings, FakeImages(), FakeContainers())


def php_server(caddyfile: bytes) -> list[str]:
    """The lines of the php_server block, stripped."""
    lines = [line.strip() for line in caddyfile.decode().splitlines()]
    start = lines.index("php_server {")
    depth, block = 0, []
    for line in lines[start:]:
        depth += line.endswith("{") - (line == "}")
        block.append(line)
        if depth == 0:
            return block
    raise AssertionError("php_server block not closed")


def test_no_server_table_is_classic_mode(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, PATHS)
    assert app_facts.parse(PATHS).server is None
    assert extract.worker(pipe) == ([], [])
    assert php_server(extract.caddyfile(pipe)) == ["php_server {", "root webroot", "}"]
    names = [e.arcname for e in extract.config_entries(pipe, b"")]
    assert ".frankenphp/worker.json" not in names


def test_worker_none_is_classic_mode_too() -> None:
    assert app_facts.parse('[server]\nworker = "none"\nworkers = 2\n').server is None


def test_the_worker_block_lands_in_php_server_and_nowhere_else(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, PATHS + WORKER)
    caddyfile = extract.caddyfile(pipe)
    assert php_server(caddyfile) == [
        "php_server {",
        "worker {",
        "file .frankenphp/cakephp-worker.php",
        "num {$FRANKENPHP_WORKERS:3}",
        "match *",
        "}",
        "root webroot",
        "}",
    ]
    assert caddyfile.decode().count("worker {") == 1
    text = caddyfile.decode()
    inner = text[text.index("php_server {") :].splitlines()[1]
    assert inner.startswith("\t\t\t") and inner.strip() == "worker {"  # one level deeper


def test_the_payload_carries_the_script_and_its_configuration(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, PATHS + WORKER)
    entries = {e.arcname: e for e in extract.config_entries(pipe, b"")}
    script = entries[".frankenphp/cakephp-worker.php"].source
    assert script == (REPO / "builder" / "worker" / "cakephp-worker.php").read_bytes()
    source = entries[".frankenphp/worker.json"].source
    assert isinstance(source, bytes)
    config = json.loads(source)
    assert config == {
        "application": "App\\Application",
        "boot_url_env": "FULL_BASE_URL",
        "config_dir": "config",
        "docroot": "webroot",
        "front_controller": "index.php",
        "max_requests": 0,
        "new_constants": "restart",
        "watch": ["config/smtp.php"],  # the file links: what the app writes at run time
    }


def test_the_extract_key_moves_with_the_worker_and_its_script(tmp_path: Path) -> None:
    classic = extract.config_key(pipeline(tmp_path / "a", PATHS))
    pipe = pipeline(tmp_path / "b", PATHS + WORKER)
    with_worker = extract.config_key(pipe)
    assert with_worker != classic
    assert extract.config_key(pipeline(tmp_path / "c", PATHS + WORKER)) == with_worker
    script = tmp_path / "b" / "builder" / "worker" / "cakephp-worker.php"
    script.write_text(script.read_text() + "\n// changed\n")
    assert extract.config_key(pipe) != with_worker


def test_every_key_of_the_table_is_read() -> None:
    server = app_facts.parse(
        '[server]\nworker = "cakephp"\nworkers = 4\nmax_requests = 500\nnew_constants = "keep"\n'
        "application = '\\Acme\\Http\\App'\nconfig_dir = \"etc\"\n"
        'front_controller = "app.php"\nboot_url_env = "APP_URL"\nwatch = ["etc/local.php"]\n'
    ).server
    assert server == app_facts.Server(
        worker="cakephp", workers=4, max_requests=500, new_constants="keep",
        application="Acme\\Http\\App", config_dir="etc", front_controller="app.php",
        boot_url_env="APP_URL", watch=("etc/local.php",),
    )  # fmt: skip
    empty = app_facts.parse('[server]\nworker = "cakephp"\nwatch = []\n' + PATHS)
    assert app_facts.worker_json(empty, "webroot").count(b'"watch": []') == 1


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('worker = "laravel"', "server.worker must be one of ['cakephp']"),
        ('worker = "cakephp"\nworkers = -1', "server.workers must be a whole number >= 0"),
        ('worker = "cakephp"\nworkers = "2"', "server.workers must be a whole number >= 0"),
        ('worker = "cakephp"\nmax_requests = true', "server.max_requests must be a whole number"),
        ('worker = "cakephp"\nnew_constants = "undefine"', "server.new_constants must be"),
        ('worker = "cakephp"\napplication = "App Application"', "server.application must be"),
        ('worker = "cakephp"\nfront_controller = "../index.php"', "server.front_controller"),
        ('worker = "cakephp"\nfront_controller = "index.html"', "must be a .php file"),
        ('worker = "cakephp"\nboot_url_env = "full-url"', "server.boot_url_env must be"),
        ('worker = "cakephp"\nwatch = "config/app.php"', "server.watch must be a list"),
        ('worker = "cakephp"\nthreads = 2', "server.threads is not a key"),
    ],
)
def test_a_bad_server_table_is_one_line_naming_the_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        app_facts.parse(f"[server]\n{table}\n", "app.toml")
    text = str(caught.value)
    assert message in text and "\n" not in text and text.startswith("app.toml: ")


def test_a_missing_worker_script_or_config_folder_is_one_line(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, PATHS + WORKER)
    (tmp_path / "builder" / "worker" / "cakephp-worker.php").unlink()
    with pytest.raises(BuildError, match=re.escape("builder/worker/cakephp-worker.php is missing")):
        extract.caddyfile(pipe)
    app = tmp_path / "app"
    (app / "bin").mkdir(parents=True)
    (app / "bin" / "cake.php").write_text("<?php\n")
    with pytest.raises(ConfigError, match=re.escape("server.config_dir 'config' is not a folder")):
        app_facts.check_against_app(app_facts.parse(WORKER), app, "app.toml")


def test_the_shipped_facts_keep_worker_mode_off_with_an_example() -> None:
    text = (REPO / "orangescrum-ee" / "app.toml").read_text()
    assert app_facts.parse(text).server is None
    example = re.sub(r"^# ([a-z_]+ = )", r"\1", text, flags=re.M)
    server = app_facts.parse(example).server
    assert server is not None and server.worker == "cakephp"
