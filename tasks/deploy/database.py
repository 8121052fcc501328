"""Where a backup's SQL runs: inside the bundled database container (its own client, local
socket), or in a helper container that has the app's settings, network and secret mounts
(external database). Passwords stay in the environment or a file, never on a command line.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from tasks.core.errors import DatabaseError
from tasks.core.pipeline import Pipeline
from tasks.core.ports import ContainerEngine, Service

APP, DB = "orangescrum-app", "orangescrum-db"
DUMP_IN_CONTAINER = "/tmp/durango-backup.dump"
# Connection settings for PostgreSQL's client tools, from the container's own environment: in the
# bundled database container its POSTGRES_* (local socket), in a helper with the app's settings
# its DB_* (the password stays in the environment, never on a command line).
BUNDLED_CLIENT = 'export PGUSER=$POSTGRES_USER PGDATABASE=${POSTGRES_DB:-$POSTGRES_USER}; "$@"'
EXTERNAL_CLIENT = (
    'if [ -n "${DB_PASSWORD_FILE:-}" ]; then PGPASSWORD=$(cat "$DB_PASSWORD_FILE"); '
    "else PGPASSWORD=$DB_PASSWORD; fi; "
    "export PGPASSWORD PGHOST=$DB_HOST PGPORT=${DB_PORT:-5432} PGUSER=$DB_USERNAME "
    'PGDATABASE=$DB_NAME; "$@"'
)


class Database:
    """Where SQL runs: inside the bundled database container, or in a helper container that
    has the app's environment and network (external database)."""

    def __init__(self, containers: ContainerEngine, target: Service, bundled: bool) -> None:
        self.containers = containers
        self.target = target
        self.bundled = bundled

    def run(self, *cmd: str) -> str:
        """A client command with the connection settings in its environment."""
        wrapper = BUNDLED_CLIENT if self.bundled else EXTERNAL_CLIENT
        return self.containers.exec(self.target.id, ["sh", "-c", wrapper, "sh", *cmd])

    def major(self, query: str) -> int:
        return int(self.run("psql", "-XAtc", query).strip()) // 10000

    def check_client(self) -> None:
        """pg_dump refuses a server newer than itself: say what to do before anything runs."""
        server = self.major("SHOW server_version_num")
        found = re.search(r"(\d+)\.", self.run("pg_dump", "--version"))
        client = int(found.group(1)) if found else 0
        if client < server:
            raise DatabaseError(
                f"the database server is PostgreSQL {server} but the backup's pg_dump is "
                f"{client}: set backup_client_image to an image with PostgreSQL {server}'s client "
                f"tools (for example postgres:{server}), present on this engine"
            )

    def table_count(self) -> int:
        query = "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        return int(self.run("psql", "-XAtc", query).strip())

    def dump(self, dest: Path) -> tuple[str, int]:
        self.run("pg_dump", "-Fc", "-f", DUMP_IN_CONTAINER)
        try:
            return self.containers.file_out(self.target.id, DUMP_IN_CONTAINER, dest)
        finally:
            self.containers.exec(self.target.id, ["rm", "-f", DUMP_IN_CONTAINER], user="0")


@contextlib.contextmanager
def database(pipe: Pipeline, bundled: bool, image: str) -> Iterator[Database]:
    """The bundled database container, or a helper with the app's settings for an external one
    (from `backup_client_image` when set: a client as new as the server)."""
    project, containers = pipe.settings.compose_project, pipe.containers
    if bundled:
        db = containers.service(project, DB)
        if db is None:
            raise DatabaseError(f"the bundled database ({DB}) is not running")
        yield Database(containers, db, bundled=True)
        return
    app = next((s for s in containers.services(project) if s.service == APP), None)
    if app is None:
        raise DatabaseError(f"{APP} does not exist: its settings name the external database")
    client_image = pipe.settings.backup_client_image or image
    with containers.helper(client_image, {}, like=app, project=project) as helper:
        yield Database(containers, helper, bundled=False)
