"""Tenants: several isolated OrangeScrum instances on one host and one PostgreSQL server.

A tenant is a name. It has its own env file (orangescrum-ee/tenants/<name>.env, private), compose
project (orangescrum-<name>: its own containers and volumes), database and role on the shared
server, published port, and backups (backups/<name>/). `tenant=<name>` (or `name=<name>`)
points `doit up`, `down`, `backup`, `restore` at it.

The shared server is described by orangescrum-ee/tenants/server.env: DB_HOST and DB_PORT as the
app containers reach it, and an administrator (DB_ADMIN_USER, DB_ADMIN_PASSWORD) used only to
create and drop tenants. Each tenant's role owns only its database (and that database's public
schema); CONNECT on it is revoked from PUBLIC, so no other tenant's role can connect.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from tasks.core.errors import ConfigError, TenantError
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.deploy import backup, bundle

FIRST_PORT = 18100
# Statements run as the administrator; names and the password arrive as psql variables.
CREATE = r"""
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
\c :"db"
SELECT format('ALTER SCHEMA public OWNER TO %I', :'role') \gexec
"""
DROP = r"""
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'db') \gexec
SELECT format('DROP ROLE IF EXISTS %I', :'role') \gexec
"""


def folder(pipe: Pipeline) -> Path:
    return pipe.settings.bundle_dir / "tenants"


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def server(pipe: Pipeline) -> dict[str, str]:
    path = folder(pipe) / "server.env"
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: it names the shared PostgreSQL server (DB_HOST, DB_PORT) and "
            "its administrator (DB_ADMIN_USER, DB_ADMIN_PASSWORD)"
        )
    found = read_env(path)
    missing = [k for k in ("DB_HOST", "DB_ADMIN_USER", "DB_ADMIN_PASSWORD") if not found.get(k)]
    if missing:
        raise ConfigError(f"{path}: set {', '.join(missing)}")
    return found


def admin_sql(pipe: Pipeline, script: str, variables: dict[str, str]) -> None:
    """Run a script as the server's administrator, in a throw-away container of the runtime
    image (its psql), on the host's network view (host.docker.internal works)."""
    srv = server(pipe)
    env = {
        "PGHOST": srv["DB_HOST"],
        "PGPORT": srv.get("DB_PORT", "5432"),
        "PGUSER": srv["DB_ADMIN_USER"],
        "PGPASSWORD": srv["DB_ADMIN_PASSWORD"],
        "PGDATABASE": srv.get("DB_ADMIN_DATABASE", "postgres"),
        "SCRIPT": script,
    }
    args = [f"-v{name}={value}" for name, value in variables.items()]
    command = ["sh", "-c", 'printf "%s" "$SCRIPT" | psql -X -q -v ON_ERROR_STOP=1 "$@" -f -', "sh"]
    pipe.containers.run_once(f"{pipe.settings.runtime_image}:latest", [*command, *args], env)


def names(pipe: Pipeline) -> list[str]:
    return sorted(p.stem for p in folder(pipe).glob("*.env") if p.stem != "server")


def free_port(pipe: Pipeline) -> int:
    used = {int(read_env(folder(pipe) / f"{n}.env").get("APP_PORT", 0)) for n in names(pipe)}
    return next(port for port in range(FIRST_PORT, FIRST_PORT + 1000) if port not in used)


def add(pipe: Pipeline, port: int, host: str) -> None:
    settings = pipe.settings
    name = settings.tenant
    if not name:
        raise ConfigError("name the tenant: doit tenant-add name=acme")
    env_file = settings.env_file
    if env_file.exists():
        raise TenantError(f"tenant {name} exists ({env_file}); `doit tenants` lists them")
    srv = server(pipe)
    role = db = f"os_{name}"
    password = secrets.token_hex(24)
    port = port or free_port(pipe)
    admin_sql(pipe, CREATE, {"role": role, "db": db, "password": password})
    url = f"https://{host}" if host else f"http://localhost:{port}"
    lines = [
        f"# Tenant {name}, made by `doit tenant-add`: its own database and role on the shared",
        "# server, its own compose project, volumes, port and backups. Private: holds secrets.",
        "APP_BIND=127.0.0.1",
        f"APP_PORT={port}",
        f"APP_URL={url}",
        f"DB_HOST={srv['DB_HOST']}",
        f"DB_PORT={srv.get('DB_PORT', '5432')}",
        f"DB_NAME={db}",
        f"DB_USERNAME={role}",
        f"DB_PASSWORD={password}",
        f"SECURITY_SALT={secrets.token_hex(32)}",
        "RUN_SEEDERS=auto",
        "TZ=UTC",
    ]
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.touch(mode=0o600)
    env_file.write_text("\n".join(lines) + "\n")
    print(f"tenant-add: {name}: database {db}, role {role}, port {port}; `doit up tenant={name}`")


def remove(pipe: Pipeline, delete_data: bool, confirm: bool) -> None:
    """Stop the tenant, after a backup when it runs. Its data stays unless --delete-data
    --confirm: then its volumes, database and role go too (the backup stays)."""
    settings = pipe.settings
    name = settings.tenant
    if not settings.env_file.is_file():
        raise TenantError(f"no tenant {name!r}; `doit tenants` lists them")
    if delete_data and not confirm:
        raise TenantError(
            f"--delete-data removes {name}'s volumes, database and role: add --confirm"
        )
    if any(s.running for s in pipe.containers.services(settings.compose_project)):
        backup.backup(pipe)
    bundle.compose(pipe, "down", "--remove-orphans", *(["--volumes"] if delete_data else []))
    if delete_data:
        admin_sql(pipe, DROP, {"role": f"os_{name}", "db": f"os_{name}"})
        settings.env_file.unlink()
    kept = "deleted" if delete_data else "kept (volumes, database, env file)"
    print(f"tenant-remove: {name} stopped; data {kept}; backups in {settings.backup_dir}")


def list_tenants(pipe: Pipeline) -> None:
    found = names(pipe)
    if not found:
        print(f"tenants: none in {folder(pipe)}")
    for name in found:
        env = read_env(folder(pipe) / f"{name}.env")
        running = [s for s in pipe.containers.services(f"orangescrum-{name}") if s.running]
        print(
            f"{name}: port {env.get('APP_PORT')}, database {env.get('DB_NAME')} on "
            f"{env.get('DB_HOST')}, {len(running)} container(s) running"
        )


PARAMS_ADD = [
    {"name": "port", "long": "port", "type": int, "default": 0,
     "help": "published port (default: the next free one from 18100)"},
    {"name": "host", "long": "host", "type": str, "default": "",
     "help": "host name a TLS proxy serves the tenant on (sets APP_URL)"},
]  # fmt: skip
PARAMS_REMOVE = [
    {"name": "delete_data", "long": "delete-data", "type": bool, "default": False,
     "help": "also delete the tenant's volumes, database and role"},
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
