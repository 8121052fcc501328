"""composer.lock's download locations pointed at the repository a build uses instead of Packagist.

`composer install` with a lock never asks a repository: it downloads each package from the
lock's own `dist.url` (GitHub, for a lock made against Packagist) and falls back to `source`.
Composer's own way to move those URLs, `composer update --lock`, needs every locked package (dev
ones too) in the repository, which a production mirror does not hold. So the build's copy of the
lock (never the app's) gets, for every non-dev package, the dist the repository has for exactly
that name and version, with the lock's reference kept and `source` dropped: the versions, the
content hash and the install are the lock's. A package the repository lacks is named.

Repositories: a folder of zips (artifact), a folder of path packages (or one), and a Composer
repository URL (its metadata fetched through a function the caller gives: no network here).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import cast

from tasks.core.errors import ConfigError

Dist = dict[str, object]
# (name, version) -> what the lock entry gets: its new "dist" (and "transport-options")
Index = dict[tuple[str, str], dict[str, object]]


def version_key(version: str) -> str:
    """Versions compared as Composer's pretty forms differ: `v6.4.4` and `6.4.4` are one."""
    text = version.strip().lower()
    return text[1:] if text[:1] == "v" and text[1:2].isdigit() else text


def _composer_json_in_zip(path: Path) -> dict[str, object] | None:
    """The package's composer.json: at the root of the zip, or in its one top folder."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if PurePosixPath(n).name == "composer.json"]
            if not names:
                return None
            best = min(names, key=lambda n: len(PurePosixPath(n).parts))
            data = json.loads(archive.read(best))
    except (OSError, zipfile.BadZipFile, ValueError, KeyError):
        return None
    return data if isinstance(data, dict) else None


def artifact_index(folder: Path, in_image: str) -> Index:
    """Every zip of an artifact repository by the name and version its composer.json declares."""
    index: Index = {}
    for path in sorted(folder.glob("*.zip")):
        meta = _composer_json_in_zip(path)
        if not meta or not isinstance(meta.get("name"), str) or "version" not in meta:
            continue
        sha1 = hashlib.sha1(path.read_bytes()).hexdigest()  # Composer's dist shasum is sha1
        key = (str(meta["name"]).lower(), version_key(str(meta["version"])))
        index[key] = {"dist": {"type": "zip", "url": f"{in_image}/{path.name}", "shasum": sha1}}
    return index


def path_index(folder: Path, in_image: str) -> Index:
    """A path repository: `folder` itself or each folder below it with a composer.json. A
    package without a version matches any version of its name."""
    found: Index = {}
    candidates = [folder] if (folder / "composer.json").is_file() else sorted(folder.iterdir())
    for package in candidates:
        try:
            meta = json.loads((package / "composer.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            continue
        where = in_image if package == folder else f"{in_image}/{package.name}"
        key = (meta["name"].lower(), version_key(str(meta.get("version", "*"))))
        found[key] = {
            "dist": {"type": "path", "url": where},
            "transport-options": {"symlink": False, "relative": False},
        }
    return found


def _expand_minified(versions: list[dict[str, object]]) -> list[dict[str, object]]:
    """Composer 2 metadata ("minified": "composer/2.0"): each version repeats only what changed."""
    expanded: list[dict[str, object]] = []
    current: dict[str, object] = {}
    for entry in versions:
        current = {**current, **entry}
        current = {k: v for k, v in current.items() if v != "__unset"}
        expanded.append(dict(current))
    return expanded


def metadata_index(fetch: Callable[[str], bytes], url: str, names: Iterable[str]) -> Index:
    """A Composer repository (Satis, Private Packagist, a mirror): `packages.json`, then each
    package's metadata (`metadata-url`, Composer 2) or the inline `packages` (Composer 1)."""
    base = url.rstrip("/")
    try:
        root = json.loads(fetch(f"{base}/packages.json"))
    except ValueError:
        raise ConfigError(f"composer_repository {url}: packages.json is not JSON") from None
    per_package: dict[str, list[dict[str, object]]] = {}
    if isinstance(root.get("metadata-url"), str):
        template = root["metadata-url"]
        for name in names:
            where = template.replace("%package%", name)
            target = where if "://" in where else f"{base}/{where.lstrip('/')}"
            try:
                data = json.loads(fetch(target))
            except (OSError, ValueError):
                continue  # not in this repository: reported as missing
            versions = (data.get("packages") or {}).get(name) or []
            if data.get("minified") == "composer/2.0":
                versions = _expand_minified(versions)
            per_package[name] = versions
    else:
        for name, versions in (root.get("packages") or {}).items():
            listed = versions.values() if isinstance(versions, dict) else versions
            per_package[str(name)] = list(listed)
    index: Index = {}
    for name, versions in per_package.items():
        for entry in versions:
            dist = entry.get("dist")
            if isinstance(dist, dict) and "version" in entry:
                chosen = {k: v for k, v in dist.items() if k in ("type", "url", "shasum")}
                index[(name.lower(), version_key(str(entry["version"])))] = {"dist": chosen}
    return index


def rewrite(lock_text: str, index: Index, where: str) -> str:
    """The build's copy of the lock with every non-dev package's dist taken from the repository
    (`where` names it in the error). ConfigError naming each package the repository lacks."""
    try:
        lock = json.loads(lock_text)
    except ValueError:
        raise ConfigError("composer.lock is not JSON") from None
    missing = []
    for package in lock.get("packages") or []:
        name, version = str(package.get("name", "")).lower(), str(package.get("version", ""))
        found = index.get((name, version_key(version))) or index.get((name, "*"))
        if found is None:
            missing.append(f"{package.get('name')} {version}")
            continue
        reference = (package.get("dist") or {}).get("reference") or (
            package.get("source") or {}
        ).get("reference")
        dist = dict(cast(Dist, found["dist"]))
        if reference:
            dist["reference"] = reference
        package["dist"] = dist
        package.pop("source", None)
        if "transport-options" in found:
            package["transport-options"] = found["transport-options"]
    if missing:
        named = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise ConfigError(
            f"composer.lock needs {named}, which composer_repository {where} does not "
            "have: add it to that repository, or set composer_packagist=yes to let Composer "
            "fetch it from the lock's own locations"
        )
    return json.dumps(lock, indent=4, ensure_ascii=False) + "\n"
