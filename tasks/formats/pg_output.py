"""What PostgreSQL's client tools (and `df`) print, read into values: versions, the schemas of a
dump's table of contents (`pg_restore -l`), the per-table row counts of a full read of a dump
(`pg_restore -f -` through the awk program below), free space.

A full read is what makes a backup count: `pg_restore -f -` decodes every block of the dump and
the awk program counts the data lines of every COPY block, so a truncated or corrupted dump
fails there, and the counts go into the manifest for the restore to compare against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.core.errors import FormatError

# Reads `pg_restore -f -` on stdin; prints `rows <table> <n>` per COPY block, `exit <status>`
# for the marker line the caller's shell appends (a random word per run, so no data line can
# pass for it), `open <table>` for a block never closed.
COUNT_ROWS = r"""
$1 == marker && NF == 2 { print "exit " $2; next }
copying && $0 == "\\." { print "rows " name " " n; copying = 0; next }
copying { n++; next }
/^COPY .* FROM stdin;$/ {
    name = substr($0, 6); sub(/ FROM stdin;$/, "", name); sub(/ \(.*$/, "", name)
    copying = 1; n = 0; next
}
END { if (copying) print "open " name }
"""


def version(text: str) -> tuple[int, int]:
    """`pg_dump (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)` -> (15, 10); `16beta1` -> (16, 0)."""
    found = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", text) or re.search(
        r"\b(\d+)(?:\.(\d+))?", text
    )
    if not found:
        raise FormatError(f"no PostgreSQL version in {text.strip()[:80]!r}")
    return int(found.group(1)), int(found.group(2) or 0)


def version_text(text: str) -> str:
    major, minor = version(text)
    return f"{major}.{minor}"


@dataclass(frozen=True)
class FullRead:
    """The result of reading a dump in full."""

    status: int | None  # pg_restore's exit status (None: the marker never came)
    tables: dict[str, int]
    unterminated: str = ""


def full_read(output: str) -> FullRead:
    status: int | None = None
    tables: dict[str, int] = {}
    unterminated = ""
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word == "rows":
            table, _, count = rest.rpartition(" ")
            tables[table] = tables.get(table, 0) + int(count)
        elif word == "exit" and rest.strip().isdigit():
            status = int(rest.strip())
        elif word == "open":
            unterminated = rest
    return FullRead(status, tables, unterminated)


def schemas(listing: str) -> tuple[str, ...]:
    """The schemas a dump creates or fills, from `pg_restore -l` (`; <id> <oid> SCHEMA - name
    owner` and every `TABLE <schema> <name> <owner>` line), sorted."""
    found = set()
    for line in listing.splitlines():
        if line.startswith(";") or not line.strip():
            continue
        words = line.split()
        if "SCHEMA" in words[:5]:
            at = words.index("SCHEMA")
            if len(words) > at + 2:
                found.add(words[at + 2])
        elif "TABLE" in words[:5] and words[words.index("TABLE") + 1 :][:1] != ["DATA"]:
            at = words.index("TABLE")
            if len(words) > at + 1:
                found.add(words[at + 1])
    return tuple(sorted(found))


def dumped_by(listing: str) -> tuple[int, int]:
    """The version of the pg_dump that wrote a dump, from its `pg_restore -l` header."""
    found = re.search(r"^;\s+Dumped by pg_dump version:\s*(\S+)", listing, re.M)
    if not found:
        raise FormatError("the dump's table of contents names no pg_dump version")
    return version(found.group(1))


def df_available(text: str) -> int:
    """Bytes available from `df -Pk PATH` (the last line's fourth column, in KiB)."""
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        return int(lines[-1].split()[3]) * 1024
    except (IndexError, ValueError):
        raise FormatError(f"df printed no free space: {text.strip()[:120]!r}") from None
