"""Where a data operation's SQL and PostgreSQL tools run, and the few things it asks of them.

Bundled (DB_HOST names the bundle's database service): inside that container, over its local
socket, as its POSTGRES_USER. External: in a throw-away helper container (an image with the
client tools) on the app's network, with the env file's settings. No password ever reaches a
command line, a container's environment or `docker inspect`: the helper gets a pgpass file
through its stdin. Every command is a tethered stream (engine/exec.py): a dump flows from
`pg_dump` into the backup folder and back into `pg_restore`, and nothing outlives doit.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import DatabaseError
from tasks.core.pipeline import Pipeline
from tasks.core.ports import ContainerEngine, Service, Streamed
from tasks.deploy import bundle
from tasks.deploy.bundle import APP_SERVICES, DB_SERVICE
from tasks.formats import pg_output
from tasks.formats.backup_manifest import TABLE

APP, DB = APP_SERVICES[0], DB_SERVICE
# The row counts of a full read: pg_restore's SQL through the awk program of formats/pg_output.
FULL_READ = (
    'marker=$1; program=$2; shift 2; { pg_restore -f - "$@"; printf "\\n%s %s\\n" "$marker" "$?"; }'
    ' | awk -v marker="$marker" "$program"'
)
WRITE_PGPASS = 'umask 077 && cat > "$0"'


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def pgpass_line(host: str, port: str, user: str, password: str) -> bytes:
    def field(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return f"{field(host)}:{field(port)}:*:{field(user)}:{field(password)}\n".encode()


@dataclass(frozen=True)
class Credentials:
    """How a client reaches an external server. The password is kept in memory only."""

    host: str
    port: str
    user: str
    password: str
    database: str


class Database:
    """A client of one PostgreSQL server: the bundled container or a helper."""

    def __init__(
        self,
        containers: ContainerEngine,
        target: Service,
        bundled: bool,
        env: Mapping[str, str],
        name: str,
    ) -> None:
        self.containers = containers
        self.target = target
        self.bundled = bundled
        self.env = dict(env)
        self.name = name  # the database the app uses now
        # where server-wide statements run: the bundled server always has `postgres`; a role
        # on a shared server may connect to its own database only
        self.server_db = "postgres" if bundled else name

    def stream(
        self,
        cmd: Sequence[str],
        database: str | None = None,
        stdin: Path | bytes | None = None,
        stdout: Path | None = None,
        what: str = "",
    ) -> Streamed:
        """A client command; DatabaseError with its stderr when it fails."""
        env = {**self.env, "PGDATABASE": database or self.name}
        done = self.containers.exec_stream(self.target.id, cmd, env, "", stdin, stdout)
        if done.code != 0:
            detail = done.err.strip().splitlines()[-1:] or [f"exit {done.code}"]
            raise DatabaseError(f"{what or cmd[0]} failed: {detail[0][:300]}")
        return done

    def sql(self, query: str, database: str | None = None) -> str:
        """Statements on psql's stdin (never on its command line); their tuples, unaligned."""
        cmd = ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        return self.stream(cmd, database, stdin=query.encode(), what="psql").out.decode()

    def tool_version(self, tool: str) -> tuple[int, int]:
        return pg_output.version(self.stream([tool, "--version"]).out.decode())

    def server_version(self) -> tuple[int, int]:
        number = int(self.sql("SHOW server_version_num").strip())
        return number // 10000, number % 10000

    def check_client(self) -> None:
        """pg_dump refuses a server newer than itself: say what to do before anything runs."""
        server = self.server_version()[0]
        client = self.tool_version("pg_dump")[0]
        if client < server:
            raise DatabaseError(
                f"the database server is PostgreSQL {server} but the backup's pg_dump is "
                f"{client}: set backup_client_image to an image with PostgreSQL {server}'s client "
                f"tools (for example postgres:{server}), present on this engine"
            )

    def dump(self, dest: Path) -> tuple[str, int]:
        """`pg_dump -Fc` of the live database, streamed into `dest`: (sha256, size)."""
        done = self.stream(["pg_dump", "-Fc"], stdout=dest, what="pg_dump")
        return done.sha256, done.size

    def listing(self, dump: Path) -> str:
        """`pg_restore -l`: the dump's table of contents."""
        return self.stream(["pg_restore", "-l"], stdin=dump, what="pg_restore -l").out.decode()

    def full_read(self, dump: Path) -> pg_output.FullRead:
        """Every block of the dump decoded by pg_restore; the data lines of each COPY counted."""
        marker = "@@" + secrets.token_hex(8)
        cmd = ["sh", "-c", FULL_READ, "sh", marker, pg_output.COUNT_ROWS]
        out = self.stream(cmd, stdin=dump, what="reading the dump").out.decode()
        return pg_output.full_read(out)

    def restore_into(self, dump: Path, database: str) -> None:
        """The dump into a new, empty database, in one transaction that stops at the first
        error: the database is complete or holds nothing of it."""
        cmd = ["pg_restore", "--no-owner", "--exit-on-error", "--single-transaction"]
        self.stream([*cmd, "-d", database], database, stdin=dump, what="pg_restore")

    def count_rows(self, tables: Sequence[str], database: str) -> dict[str, int]:
        """count(*) of each table (names as pg_dump prints them, checked by the manifest's
        pattern before they reach SQL)."""
        if not tables:
            return {}
        bad = [t for t in tables if not TABLE.match(t)]
        if bad:
            raise DatabaseError(f"not a table name: {bad[0]!r}")
        query = " UNION ALL ".join(
            f"SELECT {i}, count(*) FROM {table}" for i, table in enumerate(tables)
        )
        counts = {}
        for line in self.sql(query + ";", database).splitlines():
            index, _, count = line.partition("|")
            counts[tables[int(index)]] = int(count)
        return counts

    def size(self, database: str) -> int:
        query = f"SELECT pg_database_size({quote_literal(database)})"
        return int(self.sql(query, self.server_db).strip() or 0)

    def exists(self, database: str) -> bool:
        query = f"SELECT count(*) FROM pg_database WHERE datname = {quote_literal(database)}"
        return self.sql(query, self.server_db).strip() == "1"

    def sessions(self, database: str) -> int:
        query = f"SELECT count(*) FROM pg_stat_activity WHERE datname = {quote_literal(database)}"
        return int(self.sql(query, self.server_db).strip() or 0)

    def can_create(self) -> bool:
        query = "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
        return self.sql(query).strip() == "t"

    def create(self, database: str, owner: str = "", like: str = "") -> None:
        """A new database from template0 with the encoding and locale of `like` (the live
        database); owned by `owner` (default: the connecting role)."""
        source = like or self.name
        row = self.sql(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
            f"WHERE datname = {quote_literal(source)}",
            self.server_db,
        ).strip()
        parts = row.split("|") if row else []
        options = " TEMPLATE template0"
        if len(parts) == 3:
            encoding, collate, ctype = parts
            options += f" ENCODING {quote_literal(encoding)} LC_COLLATE {quote_literal(collate)}"
            options += f" LC_CTYPE {quote_literal(ctype)}"
        if owner:
            options += f" OWNER {quote_ident(owner)}"
        self.sql(f"CREATE DATABASE {quote_ident(database)}{options};", self.server_db)

    def drop(self, database: str) -> None:
        """Drop a database after ending its sessions (a killed restore's among them)."""
        self.sql(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE);", self.server_db)

    def free_bytes(self) -> int | None:
        """Free space where the server keeps its data (bundled only: a helper cannot see an
        external server's disk)."""
        if not self.bundled:
            return None
        where = self.sql("SHOW data_directory").strip()
        return pg_output.df_available(self.stream(["df", "-Pk", where]).out.decode())


def _container_env(service: Service) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in service.env)


def credentials(pipe: Pipeline) -> Credentials:
    """The env file's settings for an external server; the password from DB_PASSWORD, or from
    the host file compose mounts as DB_PASSWORD_FILE (DB_PASSWORD_SECRET)."""
    values = bundle.env(pipe)
    password = values.get("DB_PASSWORD")
    if values.get("DB_PASSWORD_FILE"):
        secret = values.get("DB_PASSWORD_SECRET")
        if not secret:
            raise DatabaseError(
                f"{pipe.settings.env_file}: DB_PASSWORD_FILE is set but DB_PASSWORD_SECRET (the "
                "host file compose mounts there) is not: a backup cannot read the password"
            )
        path = Path(secret) if Path(secret).is_absolute() else pipe.settings.bundle_dir / secret
        try:
            password = path.read_text().rstrip("\n")
        except OSError as exc:
            raise DatabaseError(f"cannot read DB_PASSWORD_SECRET {path}: {exc.strerror}") from None
    host = values.get("DB_HOST")
    if not host or not values.get("DB_USERNAME"):
        raise DatabaseError(f"{pipe.settings.env_file}: set DB_HOST and DB_USERNAME")
    return Credentials(
        host,
        values.get("DB_PORT") or "5432",
        values.get("DB_USERNAME"),
        password,
        bundle.database_name(pipe),
    )


def app_network(pipe: Pipeline) -> str | None:
    """The network of the project's app containers (running or not): where DB_HOST resolves."""
    for service in pipe.containers.services(pipe.settings.compose_project):
        if service.service in APP_SERVICES and service.network:
            return service.network
    return None


@contextlib.contextmanager
def client(
    pipe: Pipeline, image: str, creds: Credentials, network: str | None, app: str = "durango"
) -> Iterator[Database]:
    """A throw-away helper with PostgreSQL's client tools that reaches `creds`' server; the
    password reaches it as a pgpass file through stdin."""
    like = Service(id="", name="", service="", image_id="", running=False, network=network)
    project = pipe.settings.compose_project
    pgpass = f"/tmp/.pgpass-{secrets.token_hex(6)}"  # in this helper only, through stdin, 0600
    with pipe.containers.helper(image, {}, like=like, project=project) as helper:
        line = pgpass_line(creds.host, creds.port, creds.user, creds.password)
        write = ["sh", "-c", WRITE_PGPASS, pgpass]
        done = pipe.containers.exec_stream(helper.id, write, stdin=line)
        if done.code != 0:
            raise DatabaseError(f"cannot prepare the database client in {image}: {done.err}")
        env = {
            "PGHOST": creds.host,
            "PGPORT": creds.port,
            "PGUSER": creds.user,
            "PGPASSFILE": pgpass,
            "PGCONNECT_TIMEOUT": "10",
            "PGAPPNAME": app,
        }
        yield Database(pipe.containers, helper, False, env, creds.database)


@contextlib.contextmanager
def database(pipe: Pipeline, image: str, app: str = "durango") -> Iterator[Database]:
    """The bundle's database server: the bundled container (DB_HOST says so), or a helper
    (from `backup_client_image` when set: a client as new as the server) for an external one.
    `app` is the application_name its sessions show in pg_stat_activity."""
    project, containers = pipe.settings.compose_project, pipe.containers
    name = bundle.database_name(pipe)
    if bundle.bundled(pipe):
        server = containers.service(project, DB)
        if server is None:
            raise DatabaseError(
                f"the bundled database ({DB}) of {project} is not running; start it (doit up)"
            )
        user = _container_env(server).get("POSTGRES_USER") or bundle.env(pipe).get("DB_USERNAME")
        env = {"PGUSER": user, "PGAPPNAME": app}
        yield Database(containers, server, True, env, name)
        return
    client_image = pipe.settings.backup_client_image or image
    with client(pipe, client_image, credentials(pipe), app_network(pipe), app) as db:
        yield db
