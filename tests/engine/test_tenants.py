"""Tenants on one PostgreSQL server: each migrates and seeds its own database; no tenant role can
reach another's database, `postgres` or `template1`, nor hold more connections than its limit; a
backup/restore of one leaves the other untouched; removing one keeps the other serving, and
removing a stopped one's data takes a backup first; no password ever shows on a command line,
in `docker inspect` or in the server's log; a host that is not a DNS name is refused."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container
from helpers import POSTGRES, REPO, LocalBuild, Workspace, free_port, http, wait_ready_db

ADMIN = {"user": "tenantadmin", "password": f"admin-only-{uuid.uuid4().hex[:12]}"}


@pytest.fixture
def shared_server(
    local_build: LocalBuild, engine: docker.DockerClient
) -> Iterator[tuple[Workspace, Container]]:
    subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), "postgres"], check=True)
    port = free_port()
    server = engine.containers.run(
        POSTGRES,
        ["postgres", "-c", "log_statement=all"],
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
        for name in ("a", "b", "c", "d", "e"):
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


def as_tenant(server: Container, env: dict[str, str], database: str) -> tuple[int, str]:
    code, out = server.exec_run(
        ["psql", "-h", "127.0.0.1", "-U", env["DB_USERNAME"], "-d", database, "-XAtc", "SELECT 1"],
        environment={"PGPASSWORD": env["DB_PASSWORD"]},
    )
    assert isinstance(out, bytes)
    return int(code or 0), out.decode(errors="replace")


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

    # a's role reaches neither b's database nor the server's own ones
    for database in ("os_b", "postgres", "template1"):
        code, out = as_tenant(server, env["a"], database)
        assert code != 0 and "permission denied for database" in out, (database, out)
    limit = as_admin(server, "postgres", "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'os_a'")
    assert limit == "20"

    # backing up and restoring a leaves b exactly as it was
    port_a, port_b = int(env["a"]["APP_PORT"]), int(env["b"]["APP_PORT"])
    assert http(port_b, "/api/actions", {"name": "b-only"})[0] == 201
    b_rows = as_admin(server, "os_b", "SELECT string_agg(name, ',' ORDER BY id) FROM actions")
    ws.doit("backup", "tenant=a")
    assert http(port_a, "/api/actions", {"name": "a-after-backup"})[0] == 201
    ws.doit("restore", "--confirm", "tenant=a")
    a_names = [row["name"] for row in json.loads(http(port_a, "/api/actions")[1])]
    assert "a-after-backup" not in a_names and len(a_names) == 12
    assert as_admin(server, "os_b", "SELECT string_agg(name, ',' ORDER BY id) FROM actions") == (
        b_rows
    )
    # the restored database is the tenant's alone too
    code, out = as_tenant(server, env["b"], "os_a_g1")
    assert code != 0 and "permission denied for database" in out, out

    # removing a (data kept) leaves b serving
    removed = ws.doit("tenant-remove", "name=a")
    assert "data kept" in removed.out
    assert http(port_b, "/home/healthcheck")[0] == 200
    assert as_admin(server, "os_a_g1", "SELECT count(*) FROM actions") == "12"


def test_a_tenant_role_holds_no_more_connections_than_its_limit(
    shared_server: tuple[Workspace, Container],
) -> None:
    ws, server = shared_server
    ws.doit("tenant-add", "name=c", "tenant_connection_limit=2")
    env = tenant_env(ws, "c")
    holders = [
        server.exec_run(
            ["psql", "-h", "127.0.0.1", "-U", "os_c", "-d", "os_c", "-c", "SELECT pg_sleep(20)"],
            environment={"PGPASSWORD": env["DB_PASSWORD"]},
            detach=True,
        )
        for _ in range(2)
    ]
    assert holders
    query = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'os_c'"
    for _ in range(100):
        if as_admin(server, "postgres", query) == "2":
            break
    code, out = as_tenant(server, env, "os_c")
    assert code != 0 and "too many connections for role" in out, out


def test_removing_a_stopped_tenants_data_takes_a_backup_first(
    shared_server: tuple[Workspace, Container],
) -> None:
    ws, server = shared_server
    ws.doit("tenant-add", "name=d")
    ws.doit("up", "tenant=d")
    port = int(tenant_env(ws, "d")["APP_PORT"])
    assert http(port, "/api/actions", {"name": "only-in-d"})[0] == 201
    subprocess.run(
        ["docker", "compose", "-p", "orangescrum-d", "exec", "-T", "orangescrum-app", "sh", "-c",
         "echo kept > /data/uploads/d.txt"], check=True,
    )  # fmt: skip
    ws.doit("down", "tenant=d")
    ws.doit("tenant-remove", "name=d", "--delete-data", "--confirm")
    folder = ws.root / "backups" / "d"
    backups = [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(backups) == 1
    manifest = json.loads((backups[0] / "manifest.json").read_text())
    assert manifest["database"]["tables"]["public.actions"] == 13
    with tarfile.open(backups[0] / "volumes" / "app-uploads.tar") as tar:
        member = tar.extractfile("volume/d.txt")
        assert member is not None and member.read() == b"kept\n"
    left = "SELECT count(*) FROM pg_database WHERE datname LIKE 'os_d%'"
    assert as_admin(server, "postgres", left) == "0"
    assert as_admin(server, "postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'os_d'") == (
        "0"
    )


def sample_while(stop: threading.Event, engine: docker.DockerClient, seen: list[str]) -> None:
    """Every process's command line on this host, and every container's inspect data."""
    while not stop.is_set():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                seen.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
        try:
            for container in engine.api.containers(all=True):
                seen.append(json.dumps(engine.api.inspect_container(container["Id"])))
        except docker.errors.NotFound:
            pass


def test_no_password_reaches_a_command_line_inspect_or_the_server_log(
    shared_server: tuple[Workspace, Container], engine: docker.DockerClient
) -> None:
    ws, server = shared_server
    as_admin(server, "postgres", "CREATE ROLE os_e")  # tenant e's statements fail half-way
    seen: list[str] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_while, args=(stop, engine, seen), daemon=True)
    sampler.start()
    try:
        added = ws.doit("tenant-add", "name=c")
        failed = ws.doit("tenant-add", "name=e", check=False)
    finally:
        stop.set()
        sampler.join()
    assert failed.code != 0 and "already exists" in failed.out and "Traceback" not in failed.out
    assert "tenant-add: c" in added.out
    password = tenant_env(ws, "c")["DB_PASSWORD"]
    log = server.logs().decode(errors="replace")
    assert "CREATE ROLE" in log and len(seen) > 100
    for text in [*seen, log, added.out, failed.out]:
        where = text[:160]
        assert password not in text, f"the tenant's password is in: {where}"
        if not text.startswith(f'{{"Id": "{server.id}"'):  # the test gave the server its own
            assert ADMIN["password"] not in text, f"the admin password is in: {where}"
    for given in re.findall(r"PASSWORD '([^']*)'", log):
        assert given.startswith("SCRAM-SHA-256$4096:")  # a verifier, never a password
    assert as_tenant(server, tenant_env(ws, "c"), "os_c")[0] == 0  # and it logs in


@pytest.mark.parametrize("host", ["acme.example.com\nDB_HOST=evil", "acme example", "-x.com"])
def test_a_host_that_is_not_a_dns_name_is_refused(
    shared_server: tuple[Workspace, Container], host: str
) -> None:
    ws, server = shared_server
    # one word, `--host=…`: doit would take a separate word holding "=" for a variable
    run = ws.doit("tenant-add", "name=c", f"--host={host}", check=False)
    assert run.code != 0 and "is not a DNS name" in run.out and "Traceback" not in run.out
    assert not (ws.root / "orangescrum-ee" / "tenants" / "c.env").exists()
    role = "SELECT count(*) FROM pg_roles WHERE rolname = 'os_c'"
    assert as_admin(server, "postgres", role) == "0"
