"""`doit releases`, and what the other commands ask about releases: where a project's records
are, which migrations a release ships and which the database has applied, and which images
`doit prune` must keep (`images_to_keep`).

A release's migrations are the versions of its migration files, read from the archived app
(`package/`, the very tree its image was built from) when it is deployed: the app's
`config/Migrations` and each plugin's, as the app's facts name them (`[migrations] plugins`,
`log_table`, `plugin_log_table`). The database's are the versions in those log tables. A
rollback is refused when the database has one the target release does not ship.
"""

from __future__ import annotations

import re
from pathlib import Path

from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.deploy.database import database, quote_ident, quote_literal
from tasks.formats import releases
from tasks.formats.app_facts import Facts
from tasks.formats.releases import Records

_MIGRATION = re.compile(r"(\d+)_\w+\.(php|sql)\Z")
_TABLE = re.compile(r"[a-z_][a-z0-9_]*\Z")


def path(pipe: Pipeline) -> Path:
    return pipe.settings.state_dir / "releases" / f"{pipe.settings.compose_project}.json"


def logs_dir(pipe: Pipeline) -> Path:
    """Where a failed release's logs are kept (its containers are removed)."""
    return pipe.settings.state_dir / "releases" / pipe.settings.compose_project


def load(pipe: Pipeline) -> Records:
    return releases.load(path(pipe), pipe.settings.compose_project)


def save(pipe: Pipeline, records: Records) -> None:
    releases.save(path(pipe), records)


def released(pipe: Pipeline) -> bool:
    """The project runs behind the release proxy (it has had a release)."""
    return load(pipe).serving() is not None


def images_to_keep(pipe: Pipeline) -> set[str]:
    """Image tags and IDs `doit prune` must keep, for every project with releases in this
    checkout (prune is engine-wide: tenants share the images): each one's serving release and
    the `keep_releases` newest that served before it, so that `doit rollback` finds them."""
    keep: set[str] = set()
    for record in sorted((pipe.settings.state_dir / "releases").glob("*.json")):
        keep |= releases.images_to_keep(
            releases.load(record, record.stem), pipe.settings.keep_releases
        )
    return keep


def snake(name: str) -> str:
    """A plugin's name as CakePHP's migrations name its log table (`GitSync` -> `git_sync`)."""
    text = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name.replace("/", "_").replace(".", "_"))
    return text.lower()


def _versions(folder: Path) -> tuple[str, ...]:
    if not folder.is_dir():
        return ()
    found = (_MIGRATION.match(p.name) for p in folder.iterdir() if p.is_file())
    return tuple(sorted({m.group(1) for m in found if m}))


def shipped_migrations(app: Path, facts: Facts) -> dict[str, tuple[str, ...]]:
    """Log table -> the migration versions the app at `app` ships (tables with none left out)."""
    plugins = facts.plugins
    if plugins is None:
        plugins = tuple(
            p.parent.parent.name for p in sorted(app.glob("plugins/*/config/Migrations"))
        )
    found = {facts.migration_table: _versions(app / "config" / "Migrations")}
    for plugin in plugins:
        table = facts.plugin_migration_table.replace("{plugin}", snake(plugin))
        found[table] = _versions(app / "plugins" / plugin / "config" / "Migrations")
    return {table: versions for table, versions in found.items() if versions}


def applied_migrations(pipe: Pipeline, facts: Facts, image: str) -> dict[str, list[str]]:
    """Log table -> the versions the database has applied, from every table named like the
    facts' log tables (a plugin the serving release added counts too). `image` has the
    PostgreSQL client an external server is reached with."""
    like = facts.plugin_migration_table.replace("_", "\\_").replace("{plugin}", "%")
    tables_sql = (
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
        f"AND (table_name = {quote_literal(facts.migration_table)} "
        f"OR table_name LIKE {quote_literal(like)}) ORDER BY 1;"
    )
    with database(pipe, image, app="durango-releases") as db:
        tables = [t for t in db.sql(tables_sql).split() if _TABLE.match(t)]
        if not tables:
            return {}
        union = " UNION ALL ".join(
            f"SELECT {quote_literal(t)}, version::text FROM {quote_ident(t)}" for t in tables
        )
        rows = db.sql(union + ";").splitlines()
    applied: dict[str, list[str]] = {t: [] for t in tables}
    for row in rows:
        table, _, version = row.partition("|")
        if table in applied and version:
            applied[table].append(version)
    return {t: sorted(v) for t, v in applied.items() if v}


def show(pipe: Pipeline) -> None:
    """`doit releases`: key, commit, time (UTC), status; newest first."""
    rows = releases.table_rows(load(pipe))
    if not rows:
        print(f"releases: none for {pipe.settings.compose_project} yet (doit deploy makes one)")
        return
    print(f"{'key':12}  {'commit':12}  {'time (UTC)':19}  status")
    for key, commit, when, status, note in rows:
        print(f"{key:12}  {commit:12}  {when:19}  {status}{f' ({note})' if note else ''}")


def task(pipe: Pipeline) -> TaskDict:
    doc = "list the project's releases: image key, commit, time, status"
    return command_task(pipe, doc, lambda: show(pipe))
