"""A volume's archive in a backup (`volumes/<name>.tar`, the engine's tar of `/volume`): which
members a restore may unpack, and the listing an unpacked volume must match.

A restore unpacks as root, then the app serves and writes the volume. So a member is refused
when it is not a plain file, folder or link; when its path leaves `volume/`; when it is setuid
or setgid; when it is a symbolic link whose target is absolute or climbs out of the volume
(`volume/leak -> /run/…/pgpass` would serve a secret; `volume/etc -> ../../etc` would let a
later member or the app write through it); when a path goes through a symbolic link; or when a
hard link points outside or forward. Names with a line break are refused too (the listing
compared after the unpack is line based).
"""

from __future__ import annotations

import hashlib
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import BackupError

ROOT = "volume"


@dataclass(frozen=True)
class Entry:
    """One path of an unpacked volume: what a restore checks after unpacking."""

    kind: str  # "f" file, "d" folder, "l" symbolic link
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    size: int = 0
    sha256: str = ""
    target: str = ""  # a link's target

    def line(self, path: str) -> str:
        """The comparison form, one line per path (the helper's listing prints the same)."""
        data = self.sha256 if self.kind == "f" else self.target
        size = self.size if self.kind == "f" else 0
        return f"{path}|{self.kind}|{self.mode:o}|{self.uid}|{self.gid}|{size}|{data}"


def _inside(path: str) -> str | None:
    """The member's path below the volume root ("." for the root), or None when it leaves it."""
    if path.startswith("/") or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or parts[0] != ROOT or ".." in parts:
        return None
    return "/".join(parts[1:]) or "."


def _escapes(link: str, target: str) -> bool:
    """Does a relative link target, resolved from the link's folder, leave the volume?"""
    if target.startswith("/") or not target:
        return True
    base = posixpath.dirname(link) if link != "." else ""
    depth = len([p for p in base.split("/") if p])
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def scan(tar_path: Path) -> tuple[dict[str, Entry], list[str]]:
    """The listing the unpacked volume must show (path -> Entry), and every member a restore
    would refuse, with why ("volume/leak links outside the volume (/etc)"). Reads the whole
    archive once; BackupError when it is not a readable tar."""
    listing: dict[str, Entry] = {}
    problems: list[str] = []
    links: set[str] = set()
    try:
        with tarfile.open(tar_path, "r|") as tar:
            for member in tar:
                why, entry = _member(member, listing, links)
                if why:
                    problems.append(f"{member.name} {why}")
                    continue
                if entry is not None and entry.kind == "f" and not member.islnk():
                    digest = hashlib.sha256()
                    data = tar.extractfile(member)
                    while data is not None and (chunk := data.read(1 << 20)):
                        digest.update(chunk)
                    entry = Entry("f", entry.mode, entry.uid, entry.gid, member.size,
                                  digest.hexdigest())  # fmt: skip
                path = _inside(member.name)
                if entry is not None and path is not None:
                    listing[path] = entry
                    if entry.kind == "l":
                        links.add(path)
    except tarfile.TarError as exc:
        raise BackupError(f"{tar_path.name} is not a readable tar ({exc}): refused") from None
    for path in sorted(links):  # a target read through another link may land anywhere
        if _through_link(path, listing[path].target, links):
            problems.append(f"{ROOT}/{path} links through another link ({listing[path].target})")
    return listing, problems


def _through_link(link: str, target: str, links: set[str]) -> bool:
    parts = [p for p in posixpath.dirname(link).split("/") if p]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            parts = parts[:-1]
            continue
        parts.append(part)
        if "/".join(parts) in links and "/".join(parts) != link:
            return True
    return False


def _member(
    member: tarfile.TarInfo, listing: dict[str, Entry], links: set[str]
) -> tuple[str, Entry | None]:
    """(why it is refused, or ""; its entry)."""
    path = _inside(member.name)
    if path is None or "\n" in member.name or "\r" in member.name:
        return "is outside the volume", None
    if path in listing:
        return "appears twice", None
    parents = path.split("/")[:-1]
    if any("/".join(parents[:i]) in links for i in range(1, len(parents) + 1)):
        return "goes through a symbolic link", None
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "is a device or FIFO", None
    mode = member.mode & 0o7777
    if mode & (stat.S_ISUID | stat.S_ISGID) and not member.isdir():
        return "is setuid/setgid", None
    if member.issym():
        if _escapes(path, member.linkname):
            return f"links outside the volume ({member.linkname})", None
        return "", Entry("l", 0o777, member.uid, member.gid, target=member.linkname)
    if member.islnk():
        target = _inside(member.linkname)
        original = listing.get(target) if target is not None else None
        if original is None or original.kind != "f":
            return f"links outside the volume ({member.linkname})", None
        return "", Entry("f", mode, member.uid, member.gid, original.size, original.sha256)
    if member.isdir():
        return "", Entry("d", mode, member.uid, member.gid)
    return "", Entry("f", mode, member.uid, member.gid, member.size)


def check(tar_path: Path) -> dict[str, Entry]:
    """The listing, once every member is one a restore may unpack; else BackupError naming
    the first refused member."""
    listing, problems = scan(tar_path)
    if problems:
        raise BackupError(f"{tar_path.name}: {problems[0]}: refused, nothing changed")
    return listing


def from_volume(text: str) -> dict[str, Entry]:
    """The listing of an unpacked volume, from what LIST_VOLUME prints in a helper."""
    section = ""
    stats: dict[str, tuple[str, int, int, int, int]] = {}
    sums: dict[str, str] = {}
    targets: dict[str, str] = {}
    for line in text.splitlines():
        if line in ("@stat", "@sum", "@link"):
            section = line
            continue
        if section == "@stat" and line.count("|") >= 4:
            name, raw, owner, group, length = line.rsplit("|", 4)
            bits = int(raw, 16)
            kind = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l"}.get(
                stat.S_IFMT(bits), "?"
            )
            stats[_relative(name)] = (kind, bits & 0o7777, int(owner), int(group), int(length))
        elif section == "@sum" and "  " in line:
            digest, name = line.split("  ", 1)
            sums[_relative(name)] = digest
        elif section == "@link" and "|" in line:
            name, target = line.split("|", 1)
            targets[_relative(name)] = target
    listing = {}
    for path, (kind, mode, uid, gid, size) in stats.items():
        if kind == "l":
            listing[path] = Entry("l", 0o777, uid, gid, target=targets.get(path, ""))
        elif kind == "f":
            listing[path] = Entry("f", mode, uid, gid, size, sums.get(path, ""))
        else:
            listing[path] = Entry(kind, mode, uid, gid)
    return listing


def _relative(name: str) -> str:
    return "." if name in (".", "./") else name.removeprefix("./")


# Prints the listing of /volume that from_volume reads (GNU or busybox find, stat, sha256sum).
LIST_VOLUME = r"""
cd /volume || exit 1
echo @stat; find . -exec stat -c '%n|%f|%u|%g|%s' {} +
echo @sum; find . -type f -exec sha256sum {} +
echo @link; find . -type l | while IFS= read -r l; do printf '%s|%s\n' "$l" "$(readlink "$l")"; done
"""


def lines(listing: dict[str, Entry]) -> list[str]:
    """The listing in comparison form, sorted by path."""
    return [listing[path].line(path) for path in sorted(listing)]


def size(listing: dict[str, Entry]) -> int:
    """Bytes of file content the volume holds once unpacked."""
    return sum(entry.size for entry in listing.values() if entry.kind == "f")
