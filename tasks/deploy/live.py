"""What a bundle project runs on right now, beyond its env file: the engine names of its volumes
and the database name a restore switched to, and the image a restore or a release pinned.

One small env file per project, `.durango/live/<project>.env` (NAME=value lines), written by
rename: a restore's whole switch is that one rename, so the database and the volumes move
together, and a kill leaves either the old file or the new one. `doit up` (and every compose
call of the bundle) passes these values over the env file's; `docker compose --env-file <env>
--env-file .durango/live/<project>.env` does the same by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

from tasks.core.errors import ConfigError
from tasks.core.files import atomic_write_text
from tasks.core.pipeline import Pipeline

# The keys the live state may hold (the compose file reads each).
VOLUME_KEYS = {
    "app-uploads": "VOLUME_APP_UPLOADS",
    "app-logs": "VOLUME_APP_LOGS",
    "app-files": "VOLUME_APP_FILES",
    "app-sessions": "VOLUME_APP_SESSIONS",
    "app-cache": "VOLUME_APP_CACHE",
    "db-data": "VOLUME_DB_DATA",
}
KEYS = {*VOLUME_KEYS.values(), "DB_NAME", "APP_IMAGE", "GENERATION"}
_VALUE = re.compile(r"[A-Za-z0-9_.:@/-]*\Z")


def path(pipe: Pipeline) -> Path:
    return pipe.settings.state_dir / "live" / f"{pipe.settings.compose_project}.env"


def read(pipe: Pipeline) -> dict[str, str]:
    """The project's live values ({} before its first restore or release)."""
    file = path(pipe)
    if not file.is_file():
        return {}
    values = {}
    for line in file.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name in KEYS:
            values[name] = value
    return values


def write(pipe: Pipeline, values: dict[str, str]) -> None:
    """Replace the live values in one rename (the commit point of a restore)."""
    bad = sorted(k for k, v in values.items() if k not in KEYS or not _VALUE.match(v))
    if bad:
        raise ConfigError(f"live state: unknown key or unsafe value for {', '.join(bad)}")
    text = "# Written by durango (restore, deploy): what this project runs on now.\n"
    text += "".join(f"{k}={values[k]}\n" for k in sorted(values))
    atomic_write_text(path(pipe), text, mode=0o600)


def volume_name(pipe: Pipeline, short: str) -> str:
    """The engine name of one of the bundle's volumes, as compose will name it."""
    key = VOLUME_KEYS.get(short)
    current = read(pipe).get(key, "") if key else ""
    return current or f"{pipe.settings.compose_project}_{short}"


def generation(pipe: Pipeline) -> int:
    """The generation the project runs on: 0 before its first restore."""
    value = read(pipe).get("GENERATION", "0")
    return int(value) if value.isdigit() else 0
