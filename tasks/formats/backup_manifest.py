"""manifest.json of a backup folder: the one reader and writer.

A backup counts only through its manifest, which is written last. It says which project it
belongs to, its kind and a monotonic `sequence` (retention goes by it, never by the folder's
wall-clock name), what the dump holds (per-table row counts read back from the dump itself, the
schemas, pg_dump's version, the database's size), every volume archive with its entry count and
unpacked size, the app image the bundle ran, and the sha256 and size of every file. Every path
in it is relative to the folder and stays inside it.

`read` refuses anything else in one line; `peek` is the lenient view retention and prune use
(a damaged or older backup still has a place in the order, and may still name an image).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from tasks.core.errors import FormatError

TOOL = "durango-backup/2"
OLDER_TOOLS = ("durango-backup/1",)
KINDS = ("backup", "pre-restore")
DUMP = "database.dump"
# A qualified table name as pg_dump prints it: plain lower-case words or double-quoted ones.
_IDENT = r'(?:[a-z_][a-z0-9_$]*|"(?:[^"\n]|"")+")'
TABLE = re.compile(rf"{_IDENT}\.{_IDENT}\Z")
_SHA = re.compile(r"[0-9a-f]{64}\Z")
_VOLUME = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class VolumeEntry:
    name: str  # the engine's name of the volume when it was backed up
    file: str  # its archive, relative to the folder
    entries: int = 0  # paths in the archive (the root included)
    bytes: int = 0  # file content once unpacked


@dataclass(frozen=True)
class DatabaseEntry:
    bundled: bool
    name: str
    dump_started: str
    pg_dump: str  # pg_dump's version, "15.10"
    server: str  # the server's version
    size: int  # pg_database_size when dumped: what a staging copy needs at least
    schemas: tuple[str, ...]
    tables: dict[str, int]  # "public.actions" -> rows, counted in the dump itself


@dataclass(frozen=True)
class Manifest:
    tool: str
    project: str
    kind: str
    sequence: int
    created: str
    generation: int
    database: DatabaseEntry
    volumes: dict[str, VolumeEntry]
    images: dict[str, str]
    source_commit: str | None
    files: dict[str, FileEntry] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return self.images["app"]

    def volume_bytes(self) -> int:
        return sum(v.bytes for v in self.volumes.values())


def dumps(manifest: Manifest) -> str:
    data = asdict(manifest)
    data["database"]["schemas"] = list(manifest.database.schemas)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def relative(path: str, where: str) -> str:
    """A path inside the backup folder, or FormatError."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\\" in path or "\n" in path:
        raise FormatError(f"{where}: the path {path!r} is not inside the backup folder")
    return path


def _get(data: dict[str, object], key: str, kind: type, where: str) -> object:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FormatError(f"{where}: {key} is missing or not a {kind.__name__}")
    return value


def _count(data: dict[str, object], key: str, where: str) -> int:
    value = _get(data, key, int, where)
    assert isinstance(value, int)
    if value < 0:
        raise FormatError(f"{where}: {key} is negative")
    return value


def read(text: str, where: str = "manifest.json") -> Manifest:
    """The manifest, checked; FormatError in one line otherwise."""
    try:
        data = json.loads(text)
    except ValueError:
        raise FormatError(f"{where} is not JSON") from None
    if not isinstance(data, dict):
        raise FormatError(f"{where} is not a JSON object")
    tool = data.get("tool")
    if tool in OLDER_TOOLS:
        raise FormatError(
            f"{where} was written by an older version ({tool}) that records no row counts; "
            "a restore needs a backup taken by this version"
        )
    if tool != TOOL:
        raise FormatError(f"{where} was not made by this tool")
    kind = data.get("kind")
    if kind not in KINDS:
        raise FormatError(f"{where}: kind must be one of {', '.join(KINDS)}")
    sequence = _count(data, "sequence", where)
    db = _get(data, "database", dict, where)
    assert isinstance(db, dict)
    tables = _get(db, "tables", dict, f"{where} database")
    assert isinstance(tables, dict)
    for table, rows in tables.items():
        if not TABLE.match(table) or not isinstance(rows, int) or isinstance(rows, bool):
            raise FormatError(f"{where}: database table {table!r} or its row count is malformed")
    schemas = _get(db, "schemas", list, f"{where} database")
    assert isinstance(schemas, list)
    database = DatabaseEntry(
        bundled=bool(_get(db, "bundled", bool, f"{where} database")),
        name=str(_get(db, "name", str, f"{where} database")),
        dump_started=str(db.get("dump_started", "")),
        pg_dump=str(_get(db, "pg_dump", str, f"{where} database")),
        server=str(db.get("server", "")),
        size=_count(db, "size", f"{where} database"),
        schemas=tuple(str(s) for s in schemas),
        tables={str(t): int(r) for t, r in tables.items()},
    )
    files: dict[str, FileEntry] = {}
    for path, entry in dict(_get(data, "files", dict, where)).items():  # type: ignore[call-overload]
        relative(path, where)
        if not isinstance(entry, dict) or not _SHA.match(str(entry.get("sha256", ""))):
            raise FormatError(f"{where}: files {path!r} has no sha256")
        files[path] = FileEntry(str(entry["sha256"]), _count(entry, "size", f"{where} {path}"))
    if DUMP not in files:
        raise FormatError(f"{where}: {DUMP} has no checksum in the manifest")
    volumes: dict[str, VolumeEntry] = {}
    for short, entry in dict(_get(data, "volumes", dict, where)).items():  # type: ignore[call-overload]
        if not _VOLUME.match(short) or not isinstance(entry, dict):
            raise FormatError(f"{where}: volume {short!r} is malformed")
        file = relative(str(entry.get("file", "")), f"{where} volume {short}")
        if file not in files:
            raise FormatError(f"{where}: {file} has no checksum in the manifest")
        volumes[short] = VolumeEntry(
            str(entry.get("name", "")),
            file,
            _count(entry, "entries", f"{where} volume {short}"),
            _count(entry, "bytes", f"{where} volume {short}"),
        )
    images = _get(data, "images", dict, where)
    assert isinstance(images, dict)
    if not str(images.get("app", "")).startswith("sha256:"):
        raise FormatError(f"{where}: images.app is not an image ID")
    commit = data.get("source_commit")
    return Manifest(
        tool=TOOL,
        project=str(_get(data, "project", str, where)),
        kind=str(kind),
        sequence=sequence,
        created=str(data.get("created", "")),
        generation=_count(data, "generation", where),
        database=database,
        volumes=volumes,
        images={str(k): str(v) for k, v in images.items()},
        source_commit=str(commit) if commit else None,
        files=files,
    )


@dataclass(frozen=True)
class Peek:
    """What retention and prune read of any manifest this tool wrote, damaged or older."""

    kind: str
    sequence: int  # 0 for a backup of an older version: older than every numbered one
    images: tuple[str, ...]


def peek(text: str) -> Peek | None:
    """None when this is not a manifest of this tool (a folder retention never touches)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("tool") not in (TOOL, *OLDER_TOOLS):
        return None
    kind = data.get("kind") if data.get("kind") in KINDS else "backup"
    sequence = data.get("sequence")
    number = sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else 0
    images = data.get("images")
    named = tuple(str(v) for v in images.values()) if isinstance(images, dict) else ()
    return Peek(str(kind), max(0, number), named)
