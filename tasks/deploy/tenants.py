"""Tenants: several isolated OrangeScrum instances on one host and one PostgreSQL server.

A tenant is a name. It has its own env file (orangescrum-ee/tenants/<name>.env, private), compose
project (orangescrum-<name>: its own containers and volumes), database and role on the shared
server, published port, and backups (backups/<name>/). `tenant=<name>` (or `name=<name>`)
points `doit up`, `down`, `backup`, `restore` at it.

The shared server is described by orangescrum-ee/tenants/server.env: DB_HOST and DB_PORT as the
app containers reach it, and an administrator (DB_ADMIN_USER, DB_ADMIN_PASSWORD) used only to
create and drop tenants and their restores' databases. Isolation: each tenant's role owns only
its database (and its public schema); CONNECT on it is revoked from PUBLIC, and so is CONNECT on
`postgres` and `template1`; the role has a CONNECTION LIMIT (`tenant_connection_limit`). Its
password reaches the server only as a SCRAM-SHA-256 verifier on psql's stdin, and the
administrator's only as a pgpass file written through a throw-away container's stdin: neither is
ever on a command line, in a container's environment, or in the server's log.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from tasks.core.errors import ConfigError, TenantError
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.deploy import backup, bundle, generations, live, project_lock
from tasks.deploy.database import Credentials, Database, client, quote_ident
from tasks.formats import env_file, scram

FIRST_PORT = 18100
HOST = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
# Run as the administrator; names and the verifier arrive as psql variables set on stdin.
CREATE = r"""
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L CONNECTION LIMIT %s', :'role', :'verifier',
              :'limit'::int) \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;
\c :"db"
SELECT format('ALTER SCHEMA public OWNER TO %I', :'role') \gexec
"""


def folder(pipe: Pipeline) -> Path:
    return pipe.settings.bundle_dir / "tenants"


def on_shared_server(pipe: Pipeline) -> bool:
    """This run's project is a tenant's (its database lives on the shared server)."""
    return bool(pipe.settings.tenant) and (folder(pipe) / "server.env").is_file()


def server(pipe: Pipeline) -> env_file.EnvFile:
    path = folder(pipe) / "server.env"
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: it names the shared PostgreSQL server (DB_HOST, DB_PORT) and "
            "its administrator (DB_ADMIN_USER, DB_ADMIN_PASSWORD)"
        )
    found = env_file.read(path)
    found.check()
    missing = [k for k in ("DB_HOST", "DB_ADMIN_USER", "DB_ADMIN_PASSWORD") if not found.get(k)]
    if missing:
        raise ConfigError(f"{path}: set {', '.join(missing)}")
    return found


@contextlib.contextmanager
def admin(pipe: Pipeline, image: str = "") -> Iterator[Database]:
    """A client of the shared server as its administrator, in a throw-away container of the
    runtime image (its psql), on the host's network view (host.docker.internal works)."""
    srv = server(pipe)
    creds = Credentials(
        srv.get("DB_HOST"),
        srv.get("DB_PORT") or "5432",
        srv.get("DB_ADMIN_USER"),
        srv.get("DB_ADMIN_PASSWORD"),
        srv.get("DB_ADMIN_DATABASE") or "postgres",
    )
    with client(pipe, image or f"{pipe.settings.runtime_image}:latest", creds, None,
                "durango-tenants") as db:  # fmt: skip
        yield db


def psql_set(name: str, value: str) -> str:
    """A `\\set` line for a value that needs no quoting inside single quotes."""
    if not re.fullmatch(r"[A-Za-z0-9_$:+/=.-]*", value):
        raise TenantError(f"internal: {name} cannot be passed to psql as is")
    return f"\\set {name} '{value}'\n"


def names(pipe: Pipeline) -> list[str]:
    return sorted(p.stem for p in folder(pipe).glob("*.env") if p.stem != "server")


def free_port(pipe: Pipeline) -> int:
    used = set()
    for name in names(pipe):
        port = env_file.read(folder(pipe) / f"{name}.env").get("APP_PORT", "0")
        used.add(int(port) if port.isdigit() else 0)
    return next(port for port in range(FIRST_PORT, FIRST_PORT + 1000) if port not in used)


def check_host(host: str) -> None:
    if host and not HOST.match(host):
        raise TenantError(
            f"--host {host!r} is not a DNS name (letters, digits, hyphens and dots): refused, "
            "nothing created"
        )


def add(pipe: Pipeline, port: int, host: str) -> None:
    settings = pipe.settings
    name = settings.tenant
    if not name:
        raise ConfigError("name the tenant: doit tenant-add name=acme")
    check_host(host)
    env_path = settings.env_file
    with project_lock.held(pipe, "tenant-add"):
        if env_path.exists():
            raise TenantError(f"tenant {name} exists ({env_path}); `doit tenants` lists them")
        srv = server(pipe)
        role = db = f"os_{name}"
        password = secrets.token_hex(24)
        port = port or free_port(pipe)
        url = f"https://{host}" if host else f"http://localhost:{port}"
        values = {
            "APP_BIND": "127.0.0.1",
            "APP_PORT": str(port),
            "APP_URL": url,
            "DB_HOST": srv.get("DB_HOST"),
            "DB_PORT": srv.get("DB_PORT") or "5432",
            "DB_NAME": db,
            "DB_USERNAME": role,
            "DB_PASSWORD": password,
            "SECURITY_SALT": secrets.token_hex(32),
            "RUN_SEEDERS": "auto",
            "TZ": "UTC",
        }
        lines = [env_file.line(key, value) for key, value in values.items()]
        script = (
            psql_set("role", role)
            + psql_set("db", db)
            + psql_set("verifier", scram.verifier(password))
            + psql_set("limit", str(settings.tenant_connection_limit))
            + CREATE
        )
        with admin(pipe) as server_db:
            server_db.sql(script)
        header = [
            f"# Tenant {name}, made by `doit tenant-add`: its own database and role on the shared",
            "# server, its own compose project, volumes, port and backups. Private: holds secrets.",
        ]
        env_path.parent.mkdir(parents=True, exist_ok=True)
        env_path.touch(mode=0o600)
        env_path.write_text("\n".join([*header, *lines]) + "\n")
    print(f"tenant-add: {name}: database {db}, role {role}, port {port}; `doit up tenant={name}`")


def remove(pipe: Pipeline, delete_data: bool, confirm: bool) -> None:
    """Stop the tenant after a backup. Its data stays unless --delete-data --confirm: then its
    volumes (every generation's), databases and role go too (the backups stay)."""
    settings = pipe.settings
    name = settings.tenant
    if not settings.env_file.is_file():
        raise TenantError(f"no tenant {name!r}; `doit tenants` lists them")
    if delete_data and not confirm:
        raise TenantError(
            f"--delete-data removes {name}'s volumes, database and role: add --confirm"
        )
    project = settings.compose_project
    with project_lock.held(pipe, "tenant-remove"):
        running = any(s.running for s in pipe.containers.services(project))
        if running or delete_data:  # a stopped tenant's data is backed up through a helper
            taken = backup.take(pipe)
            print(f"tenant-remove: backup {taken.name} taken first", flush=True)
        bundle.compose(pipe, "down", "--remove-orphans", *(["--volumes"] if delete_data else []))
        if delete_data:
            role = f"os_{name}"
            databases = {f"os_{name}", bundle.database_name(pipe)}
            databases |= {g.database for g in generations.records(pipe).values()}
            with admin(pipe) as server_db:
                for database in sorted(databases):
                    server_db.drop(database)
                server_db.sql(f"DROP ROLE IF EXISTS {quote_ident(role)};")
            for volume in pipe.containers.project_volumes(project):
                pipe.containers.remove_volume(volume.name)
            for record in generations.folder(pipe).glob("*.json"):
                record.unlink()
            live.path(pipe).unlink(missing_ok=True)
            settings.env_file.unlink()
    kept = "deleted" if delete_data else "kept (volumes, database, env file)"
    print(f"tenant-remove: {name} stopped; data {kept}; backups in {settings.backup_dir}")


def list_tenants(pipe: Pipeline) -> None:
    found = names(pipe)
    if not found:
        print(f"tenants: none in {folder(pipe)}")
    for name in found:
        env = env_file.read(folder(pipe) / f"{name}.env")
        running = [s for s in pipe.containers.services(f"orangescrum-{name}") if s.running]
        print(
            f"{name}: port {env.get('APP_PORT')}, database {env.get('DB_NAME')} on "
            f"{env.get('DB_HOST')}, {len(running)} container(s) running"
        )


PARAMS_ADD = [
    {"name": "port", "long": "port", "type": int, "default": 0,
     "help": "published port (default: the next free one from 18100)"},
    {"name": "host", "long": "host", "type": str, "default": "",
     "help": "host name a TLS proxy serves the tenant on (sets APP_URL); a DNS name"},
]  # fmt: skip
PARAMS_REMOVE = [
    {"name": "delete_data", "long": "delete-data", "type": bool, "default": False,
     "help": "also delete the tenant's volumes, database and role (after a backup)"},
    {"name": "confirm", "long": "confirm", "type": bool, "default": False,
     "help": "consent to --delete-data"},
]  # fmt: skip


def task(pipe: Pipeline, name: str) -> TaskDict:
    """`tenant-add`, `tenants` or `tenant-remove`."""
    if name == "tenant-add":

        def run_add(port: int, host: str) -> None:
            add(pipe, port, host)

        doc = "add a tenant: its database and role on the shared server, its env file"
        return {**command_task(pipe, doc, run_add, params=PARAMS_ADD), "basename": name}
    if name == "tenant-remove":

        def run_remove(delete_data: bool, confirm: bool) -> None:
            remove(pipe, delete_data, confirm)

        doc = "stop a tenant after a backup; keeps its data unless --delete-data --confirm"
        return {**command_task(pipe, doc, run_remove, params=PARAMS_REMOVE), "basename": name}
    return command_task(pipe, "list the tenants", lambda: list_tenants(pipe))
