"""The bundle's named volumes, read from what `docker compose config --format json` prints (the
compose file as compose itself reads it: interpolated with the env file and the live state,
profiles applied), never by splitting the YAML text.

`volumes(config)` is short name -> engine name: with a restore's live state over the env file,
`app-uploads` may be `orangescrum-ee_app-uploads_g3`. `mounted(config)` is which short names a
service mounts, and where.
"""

from __future__ import annotations

from collections.abc import Mapping

from tasks.core.errors import FormatError


def _table(value: object, what: str) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FormatError(f"docker compose config: {what} is not a table")
    return value


def volumes(config: Mapping[str, object]) -> dict[str, str]:
    """Short name -> engine name of every named volume the compose file declares (an external
    volume or one without `name:` gets compose's default `<project>_<short>`)."""
    project = config.get("name")
    if not isinstance(project, str) or not project:
        raise FormatError("docker compose config: no project name")
    found = {}
    for short, spec in _table(config.get("volumes"), "volumes").items():
        entry = _table(spec, f"volume {short}")
        name = entry.get("name")
        found[str(short)] = name if isinstance(name, str) and name else f"{project}_{short}"
    return found


def mounted(config: Mapping[str, object], service: str) -> dict[str, str]:
    """Short volume name -> mount point, for the named volumes one service mounts."""
    services = _table(config.get("services"), "services")
    spec = _table(services.get(service), f"service {service}")
    mounts = spec.get("volumes") or []
    if not isinstance(mounts, list):
        raise FormatError(f"docker compose config: the volumes of {service} are not a list")
    found = {}
    for mount in mounts:
        entry = _table(mount, f"a volume of {service}")
        if entry.get("type") == "volume" and isinstance(entry.get("source"), str):
            found[str(entry["source"])] = str(entry.get("target", ""))
    return found
