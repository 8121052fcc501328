"""Two tenants on one PostgreSQL server: each migrates and seeds its own database, neither role
can reach the other's database, a backup/restore of one leaves the other untouched, and
removing one keeps the other serving."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import docker
import pytest
from docker.models.containers import Container
from helpers import POSTGRES, REPO, LocalBuild, Workspace, free_port, http, wait_ready_db

ADMIN = {"user": "tenantadmin", "password": "admin-only-7c1d"}


@pytest.fixture
def shared_server(
    local_build: LocalBuild, engine: docker.DockerClient
) -> Iterator[tuple[Workspace, Container]]:
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "postgres"], check=True)
    port = free_port()
    server = engine.containers.run(
        POSTGRES,
        detach=True,
        name=f"durango-test-server-{uuid.uuid4().hex[:8]}",
        environment={"POSTGRES_USER": ADMIN["user"], "POSTGRES_PASSWORD": ADMIN["password"]},
        ports={"5432/tcp": ("0.0.0.0", port)},
    )
    ws = local_build.workspace
    folder = ws.root / "orangescrum-ee" / "tenants"
    folder.mkdir(exist_ok=True)
    (folder / "server.env").write_text(
        f"DB_HOST=host.docker.internal\nDB_PORT={port}\n"
        f"DB_ADMIN_USER={ADMIN['user']}\nDB_ADMIN_PASSWORD={ADMIN['password']}\n"
    )
    wait_ready_db(server, ADMIN["user"], ADMIN["password"])
    try:
        yield ws, server
    finally:
        for name in ("a", "b"):
            subprocess.run(
                ["docker", "compose", "-p", f"orangescrum-{name}", "down", "--volumes"],
                capture_output=True,
            )
        for path in folder.glob("*.env"):
            path.unlink()
        server.remove(force=True, v=True)


def as_admin(server: Container, database: str, query: str) -> str:
    code, out = server.exec_run(["psql", "-U", ADMIN["user"], "-d", database, "-XAtc", query])
    assert code == 0 and isinstance(out, bytes), out
    return out.decode().strip()


def tenant_env(ws: Workspace, name: str) -> dict[str, str]:
    text = (ws.root / "orangescrum-ee" / "tenants" / f"{name}.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")


def test_two_tenants_on_one_server_are_isolated(
    shared_server: tuple[Workspace, Container],
) -> None:
    ws, server = shared_server
    for name in ("a", "b"):
        ws.doit("tenant-add", f"name={name}")
        ws.doit("up", f"tenant={name}")
    env = {name: tenant_env(ws, name) for name in ("a", "b")}
    assert "a: port" in ws.doit("tenants").out and "b: port" in ws.doit("tenants").out
    for name in ("a", "b"):
        assert as_admin(server, f"os_{name}", "SELECT count(*) FROM actions") == "12"
        assert as_admin(server, f"os_{name}", "SELECT state FROM durango_seed") == "done"

    # a's role cannot reach b's database
    code, out = server.exec_run(
        ["psql", "-h", "127.0.0.1", "-U", "os_a", "-d", "os_b", "-XAtc", "SELECT 1"],
        environment={"PGPASSWORD": env["a"]["DB_PASSWORD"]},
    )
    assert code != 0 and b"permission denied for database" in out, out

    # backing up and restoring a leaves b exactly as it was
    port_a, port_b = int(env["a"]["APP_PORT"]), int(env["b"]["APP_PORT"])
    assert http(port_b, "/api/actions", {"name": "b-only"})[0] == 201
    b_rows = as_admin(server, "os_b", "SELECT string_agg(name, ',' ORDER BY id) FROM actions")
    ws.doit("backup", "tenant=a")
    assert http(port_a, "/api/actions", {"name": "a-after-backup"})[0] == 201
    ws.doit("restore", "--confirm", "--drop-database", "tenant=a")
    a_names = [row["name"] for row in json.loads(http(port_a, "/api/actions")[1])]
    assert "a-after-backup" not in a_names and len(a_names) == 12
    assert as_admin(server, "os_b", "SELECT string_agg(name, ',' ORDER BY id) FROM actions") == (
        b_rows
    )

    # removing a (data kept) leaves b serving
    removed = ws.doit("tenant-remove", "name=a")
    assert "data kept" in removed.out
    assert http(port_b, "/home/healthcheck")[0] == 200
    assert as_admin(server, "os_a", "SELECT count(*) FROM actions") == "12"
