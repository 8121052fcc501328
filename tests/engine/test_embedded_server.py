"""The embedded server configuration holds wherever the binary runs: the Caddyfile serves the
configured web root, several instances of one binary do not disturb each other, and `doit
verify` tests exactly what production runs. A plain PHP app whose web root is public/."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from helpers import Workspace, free_port, http, make_local_project, new_app_repo, remove_images

PREFIX = "durango-ci-public"


@dataclass
class PublicApp:
    workspace: Workspace
    app_dir: Path


@pytest.fixture(scope="module")
def public_app(
    tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient
) -> Iterator[PublicApp]:
    tmp = tmp_path_factory.mktemp("public")
    files = {
        "public/index.php": "<?php echo 'public root ', basename(__DIR__);\n",
        "public/up.php": "<?php http_response_code(204);\n",
        "src/secret.php": "<?php echo 'never served';\n",
    }
    app = new_app_repo(tmp / "app", files)
    config = 'docroot = "public"\nhealth_path = "/up.php"\nhealth_status = "204"\n'
    root = make_local_project(tmp / "project", app.path, PREFIX, config)
    ws = Workspace(root, PREFIX, app, engine)
    ws.doit("verify")
    app_dir = subprocess.run(
        [str(ws.binary), "php-cli", ".frankenphp/app-path.php"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    yield PublicApp(ws, Path(app_dir))
    remove_images(engine, f"{PREFIX}-embed")


@contextlib.contextmanager
def serving(binary: Path, app_dir: Path) -> Iterator[int]:
    """The embedded Caddyfile server, as the entrypoint starts it, on a free loopback port. With no
    HOME in its bare environment Caddy keeps its state in ./caddy: a throw-away working folder
    keeps that out of the checkout."""
    port = free_port()
    workdir = tempfile.TemporaryDirectory(prefix="durango-serving-")
    server = subprocess.Popen(
        [str(binary), "run", "--config", str(app_dir / ".frankenphp" / "Caddyfile")],
        env={"SERVER_PORT": str(port), "SERVER_BIND": "127.0.0.1", "PATH": "/usr/bin:/bin"},
        cwd=workdir.name,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                http(port, "/")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)
        workdir.cleanup()


def test_the_embedded_caddyfile_serves_the_configured_web_root(public_app: PublicApp) -> None:
    with serving(public_app.workspace.binary, public_app.app_dir) as port:
        assert http(port, "/") == (200, "public root public")
        assert http(port, "/up.php")[0] == 204
        assert "never served" not in http(port, "/src/secret.php")[1]  # outside the web root


def test_verify_while_another_instance_serves_leaves_it_serving(public_app: PublicApp) -> None:
    ws = public_app.workspace
    with serving(ws.binary, public_app.app_dir) as port:
        assert http(port, "/")[0] == 200
        ws.binary.with_name("orangescrum-ee.manifest.json").unlink()
        assert ws.doit("verify").executed == ["verify"]
        assert http(port, "/") == (200, "public root public")  # its app is still there


def test_verify_fails_when_the_health_path_does_not_answer_as_configured(
    public_app: PublicApp,
) -> None:
    ws = public_app.workspace
    ws.binary.with_name("orangescrum-ee.manifest.json").unlink()
    run = ws.doit("verify", "health_path=/missing.php", check=False)
    assert run.code != 0
    # the front controller answers every path: 200 is not the 204 this health path promises
    assert "GET /missing.php through the embedded Caddyfile answered 200, not one of" in run.out
    assert "Traceback" not in run.out
    ws.doit("verify")


def test_a_docroot_the_app_lacks_fails_right_after_the_archive(public_app: PublicApp) -> None:
    run = public_app.workspace.doit("extract", "docroot=webroot", check=False)
    assert run.code != 0
    assert "docroot 'webroot' is not a folder of the app" in run.out
    assert "building" not in run.out and "Traceback" not in run.out


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("health_path=home/healthcheck", "health_path must start with /"),
        ("docroot=../up", "docroot must be a folder inside the app"),
        ("health_status=ok", "health_status 'ok'"),
    ],
)
def test_bad_web_settings_are_one_clear_line(
    public_app: PublicApp, setting: str, message: str
) -> None:
    run = public_app.workspace.doit("verify", setting, check=False)
    assert run.code != 0 and message in run.out and "Traceback" not in run.out
