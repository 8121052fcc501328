"""A project's release records (`.durango/releases/<project>.json`): one entry per runtime image
key that `doit deploy` tried, with the facts a rollback decides on. Read and written here only.

An entry says which image it is (tag, ID, source commit), when it was last tried and when it last
went live, its status, the migrations it ships (per migration log table: the versions of its
migration files), the health path it answers, and the pre-deploy backup taken just before it
migrated. The file is written whole by rename, so a kill leaves the old records or the new ones.
Every decision on the records (which release serves, where a rollback goes, which backup to name
when a rollback is refused, which images prune keeps) is a function here, tested without Docker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tasks.core.errors import FormatError
from tasks.core.files import atomic_write_text

TOOL = "durango-releases/1"
SERVING, RETIRED, ROLLED_BACK = "serving", "retired", "rolled back"
FAILED_MIGRATIONS, FAILED_HEALTH, FAILED = "failed: migrations", "failed: health check", "failed"
STATUSES = (SERVING, RETIRED, ROLLED_BACK, FAILED_MIGRATIONS, FAILED_HEALTH, FAILED)
SLOTS = ("blue", "green")  # the proxy's two servers: the new release goes to the idle one


@dataclass(frozen=True)
class Release:
    """One runtime image as a release of a project."""

    key: str  # the image tag: the runtime stage's key, 12 characters
    image: str  # <runtime_image>:<key>
    image_id: str
    commit: str = ""
    built: str = ""  # the image's creation time (RFC 3339)
    attempted: str = ""  # when a deploy or rollback last started with it (UTC, RFC 3339)
    deployed: str = ""  # when it last went live ("" if it never did)
    status: str = FAILED
    migrations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    health_path: str = "/"
    backup: str = ""  # the pre-deploy backup taken before it migrated ("" if none)
    slot: str = ""  # the proxy server it is (or was last) behind
    note: str = ""  # one line: why it failed

    @property
    def container(self) -> str:
        """Its app container's name stem (the project's name goes in front)."""
        return f"app-{self.key}"

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["migrations"] = {t: list(v) for t, v in sorted(self.migrations.items())}
        return data


@dataclass(frozen=True)
class Records:
    project: str
    releases: tuple[Release, ...] = ()

    def serving(self) -> Release | None:
        return next((r for r in self.releases if r.status == SERVING), None)

    def find(self, key: str) -> Release | None:
        """The release whose key starts with `key` (a unique prefix of at least 4 characters)."""
        found = [r for r in self.releases if key and len(key) >= 4 and r.key.startswith(key)]
        return found[0] if len(found) == 1 else None

    def put(self, release: Release) -> Records:
        """The records with `release` replacing the entry of its key (or added at the end)."""
        others = tuple(r for r in self.releases if r.key != release.key)
        kept = [r for r in self.releases if r.key == release.key]
        if kept:
            index = self.releases.index(kept[0])
            return replace(self, releases=(*others[:index], release, *others[index:]))
        return replace(self, releases=(*self.releases, release))

    def went_live(self, release: Release, when: str, retire_as: str = RETIRED) -> Records:
        """`release` serves from `when` on; the one that served before becomes `retire_as`."""
        records = self
        before = self.serving()
        if before is not None and before.key != release.key:
            records = records.put(replace(before, status=retire_as))
        return records.put(replace(release, status=SERVING, deployed=when, note=""))


def _release(data: object, origin: str) -> Release:
    if not isinstance(data, dict) or not isinstance(data.get("key"), str):
        raise FormatError(f"{origin}: a release entry without a key")
    migrations = data.get("migrations") or {}
    if not isinstance(migrations, dict):
        raise FormatError(f"{origin}: release {data['key']}: migrations must be a table")
    status = data.get("status", FAILED)
    if status not in STATUSES:
        raise FormatError(f"{origin}: release {data['key']}: unknown status {status!r}")
    text = {name: str(data.get(name) or "") for name in Release.__dataclass_fields__}
    return Release(
        key=text["key"],
        image=text["image"],
        image_id=text["image_id"],
        commit=text["commit"],
        built=text["built"],
        attempted=text["attempted"],
        deployed=text["deployed"],
        status=str(status),
        migrations={str(t): tuple(str(v) for v in vs) for t, vs in migrations.items()},
        health_path=text["health_path"] or "/",
        backup=text["backup"],
        slot=text["slot"],
        note=text["note"],
    )


def load(path: Path, project: str) -> Records:
    """The project's records; empty when it never had a release."""
    if not path.is_file():
        return Records(project)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable release record ({exc})") from None
    if not isinstance(data, dict) or data.get("tool") != TOOL:
        raise FormatError(f"{path}: not a release record of this tool")
    entries = data.get("releases") or []
    if not isinstance(entries, list):
        raise FormatError(f"{path}: releases must be a list")
    return Records(project, tuple(_release(e, str(path)) for e in entries))


def save(path: Path, records: Records) -> None:
    data = {
        "tool": TOOL,
        "project": records.project,
        "releases": [r.to_json() for r in records.releases],
    }
    atomic_write_text(path, json.dumps(data, indent=2) + "\n", mode=0o600)


# --- decisions ------------------------------------------------------------------------------


def other_slot(slot: str) -> str:
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


def rollback_target(records: Records, to: str = "") -> Release | str:
    """Where `doit rollback [to=KEY]` goes, or the one line that says why it cannot."""
    serving = records.serving()
    if serving is None:
        return "no release of this project serves (doit deploy starts one): nothing to roll back"
    if to:
        target = records.find(to)
        if target is None:
            known = ", ".join(r.key for r in records.releases) or "none"
            return f"no release {to!r} (give a unique key prefix of 4 or more; known: {known})"
        if target.key == serving.key:
            return f"release {target.key} is the one serving: nothing to roll back"
        if target.status.startswith(FAILED):
            return f"release {target.key} never served ({target.status}): not a rollback target"
        return target
    earlier = [r for r in records.releases if r.status == RETIRED]
    if not earlier:
        return f"no earlier release to roll back to ({serving.key} is the only one that served)"
    return max(earlier, key=lambda r: r.deployed)


def unknown_migrations(
    target: Mapping[str, Sequence[str]], applied: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """The database's applied migrations that `target` does not ship, per log table."""
    unknown = {}
    for table, versions in applied.items():
        extra = sorted(set(versions) - set(target.get(table, ())))
        if extra:
            unknown[table] = extra
    return unknown


def rollback_refusal(
    records: Records, target: Release, applied: Mapping[str, Sequence[str]]
) -> str | None:
    """None when `target` knows every migration the database has applied; else the one line of
    the refusal, naming the pre-deploy backup to restore instead: the one taken before the first
    release after `target` that shipped a migration `target` does not know."""
    unknown = unknown_migrations(target.migrations, applied)
    if not unknown:
        return None
    table, versions = next(iter(sorted(unknown.items())))
    shown = ", ".join(versions[:3]) + (" …" if len(versions) > 3 else "")
    why = (
        f"rollback to {target.key} refused: the database has migrations it does not know "
        f"({table}: {shown}); code cannot go back past a migration"
    )
    later = sorted(
        (r for r in records.releases if r.attempted > target.attempted and r.key != target.key),
        key=lambda r: r.attempted,
    )
    for release in later:
        if unknown_migrations(target.migrations, release.migrations):
            if release.backup:
                return (
                    f"{why}; restore the pre-deploy backup taken before {release.key} instead: "
                    f"doit restore --from {release.backup} --confirm --drop-database"
                )
            return (
                f"{why}; {release.key} was deployed with --no-backup, so restore a backup from "
                f"before {release.attempted} instead (doit backups)"
            )
    return f"{why}; restore a backup from before those migrations instead (doit backups)"


def images_to_keep(records: Records, keep: int) -> set[str]:
    """The images prune must keep: the serving release's and the `keep` newest others that
    served (rollback targets). Failed releases are not kept."""
    served = [r for r in records.releases if r.deployed and r.status != SERVING]
    newest = sorted(served, key=lambda r: r.deployed, reverse=True)[:keep]
    serving = records.serving()
    chosen = [*newest, *([serving] if serving else [])]
    return {ref for r in chosen for ref in (r.image, r.image_id) if ref}


def table_rows(records: Records) -> list[tuple[str, str, str, str, str]]:
    """`doit releases`: key, commit, time, status, note; newest first."""
    rows = []
    for r in sorted(records.releases, key=lambda r: r.deployed or r.attempted, reverse=True):
        when = (r.deployed if r.status in (SERVING, RETIRED, ROLLED_BACK) else r.attempted) or "-"
        rows.append((r.key, r.commit[:12] or "-", when[:19].replace("T", " "), r.status, r.note))
    return rows
