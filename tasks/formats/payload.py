"""The app payload appended to a base binary: `[base ELF binary][payload][trailer]`, format v1.

The base binary (FrankenPHP + the project's Go main, linked once) finds its app at its own end, so
changing the app never links Go again. The payload is an uncompressed POSIX tar of the app tree;
the trailer is the last 64 bytes of the file: 16-byte magic `DURANGO-PAYLOAD\\x01`, the payload's
length (uint64 LE), a reserved uint64 (0) and the raw sha256 of the payload bytes. A file without
the magic at its end is a plain base binary. The Go reader is builder/frankenphp/payload; both
sides are held byte-compatible by the shared vector in builder/frankenphp/payload/testdata/.

The tar is written here, not with `tarfile`, so its bytes depend on this code alone (not on the
Python version): entries sorted by path bytewise (a folder sorts before its contents), uid/gid 0,
empty owner names, one mtime, modes 0755 (folders, executables) / 0644 (other files) / 0777
(symlinks, whose mode Linux ignores), and a PAX header only when ustar cannot hold a name, a
link target or a size.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from tasks.core.errors import FormatError
from tasks.core.files import CHUNK, fsync_dir

MAGIC = b"DURANGO-PAYLOAD\x01"
MAGIC_PREFIX = MAGIC[:-1]  # the same prefix with another last byte: another format version
TRAILER = struct.Struct("<16sQQ32s")
TRAILER_SIZE = TRAILER.size  # 64
BLOCK = 512
MAX_OCTAL_SIZE = 8**11 - 1  # what the 12-byte ustar size field holds

Kind = Literal["file", "dir", "symlink"]
PayloadWriter = Callable[[BinaryIO], tuple[bytes, int]]


class PayloadError(FormatError, ValueError):
    """The payload or its trailer cannot be used; the message is one line a user can act on."""


class Truncated(PayloadError):
    """The file is shorter than its trailer says: a copy or download stopped early."""


class Damaged(PayloadError):
    """The payload's bytes do not hash to the trailer's sha256."""


class UnknownFormat(PayloadError):
    """The trailer is of another format version (or sets reserved bits)."""


@dataclass(frozen=True)
class Entry:
    """One entry of the app tree. `arcname` is app-relative with `/` separators ("vendor/x.php");
    `source` is the file's content, as a path on disk or as bytes; `target` is a symlink's."""

    arcname: str
    kind: Kind
    source: Path | bytes | None = None
    executable: bool = False
    target: str = ""


@dataclass(frozen=True)
class Trailer:
    """Where the payload sits in the file and what it must hash to."""

    offset: int
    size: int
    sha256: bytes

    @property
    def hexdigest(self) -> str:
        return self.sha256.hex()


class _HashingWriter:
    """Passes bytes on to `out` and hashes and counts them on the way."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.digest.update(data)
        self.size += len(data)


def write_payload(
    out: BinaryIO, entries: Iterable[Entry], epoch: int, tail: Path | None = None
) -> tuple[bytes, int]:
    """Write the deterministic tar of `entries` to `out`, streaming each file's content in 1 MiB
    chunks: (raw sha256, size) of the bytes written. Missing parent folders are added; every
    entry gets mtime `epoch` (SOURCE_DATE_EPOCH). `tail`, a tar made elsewhere (the embed
    image's dependencies), follows the entries as they are, its end-of-archive dropped: one tar
    (the caller keeps names from clashing)."""
    if not 0 <= epoch <= MAX_OCTAL_SIZE:
        raise PayloadError(f"SOURCE_DATE_EPOCH {epoch} does not fit a tar header")
    ordered = _ordered(entries)
    writer = _HashingWriter(out)
    for name, entry in ordered:
        _write_entry(writer, name, entry, epoch)
    if tail is not None:
        _copy_members(tail, writer)
    writer.write(b"\0" * (2 * BLOCK))
    return writer.digest.digest(), writer.size


def _member_size(header: bytes) -> int:
    """A tar header's size field: octal, or base-256 when its first byte has the high bit."""
    field = header[124:136]
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b"\0 ").strip()
    return int(text, 8) if text else 0


def _copy_members(tail: Path, writer: _HashingWriter) -> None:
    """Every block of `tail` up to its end-of-archive (a zero block where a header would be),
    headers of every kind (GNU long names, PAX) copied with their data."""
    with tail.open("rb") as source:
        while True:
            header = source.read(BLOCK)
            if len(header) < BLOCK or header == b"\0" * BLOCK:
                return
            writer.write(header)
            left = -(-_member_size(header) // BLOCK) * BLOCK
            while left:
                chunk = source.read(min(CHUNK, left))
                if not chunk:
                    raise PayloadError(f"{tail} ends in the middle of a member: rebuild it")
                writer.write(chunk)
                left -= len(chunk)


def _ordered(entries: Iterable[Entry]) -> list[tuple[bytes, Entry]]:
    """The entries sorted by path bytewise, checked, with their missing parent folders."""
    by_name: dict[bytes, Entry] = {}
    for entry in entries:
        name = _check_name(entry)
        if name in by_name:
            raise PayloadError(f"the app lists {entry.arcname!r} twice")
        by_name[name] = entry
    for name in list(by_name):
        parts = name.split(b"/")
        for depth in range(1, len(parts)):
            parent = b"/".join(parts[:depth])
            known = by_name.setdefault(parent, Entry(os.fsdecode(parent), "dir"))
            if known.kind != "dir":
                raise PayloadError(f"{known.arcname!r} is not a folder but holds {name.decode()!r}")
    return sorted(by_name.items())


def _check_name(entry: Entry) -> bytes:
    name = entry.arcname.encode("utf-8", "surrogateescape")
    parts = name.split(b"/")
    if not name or b"\0" in name or any(p in (b"", b".", b"..") for p in parts):
        raise PayloadError(f"{entry.arcname!r} is not a clean app-relative path")
    if entry.kind not in ("file", "dir", "symlink"):
        raise PayloadError(f"{entry.arcname!r} has unknown kind {entry.kind!r}")
    if entry.kind == "symlink" and (not entry.target or "\0" in entry.target):
        raise PayloadError(f"symlink {entry.arcname!r} has no usable target")
    if entry.kind == "file" and entry.source is None:
        raise PayloadError(f"file {entry.arcname!r} has no content source")
    return name


def _write_entry(writer: _HashingWriter, name: bytes, entry: Entry, epoch: int) -> None:
    if entry.kind == "dir":
        _write_header(writer, name + b"/", 0o755, 0, epoch, b"5", b"")
        return
    if entry.kind == "symlink":
        target = entry.target.encode("utf-8", "surrogateescape")
        _write_header(writer, name, 0o777, 0, epoch, b"2", target)
        return
    mode = 0o755 if entry.executable else 0o644
    if isinstance(entry.source, bytes):
        _write_header(writer, name, mode, len(entry.source), epoch, b"0", b"")
        writer.write(entry.source)
        writer.write(_padding(len(entry.source)))
        return
    assert entry.source is not None  # checked by _check_name
    with open(entry.source, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        _write_header(writer, name, mode, size, epoch, b"0", b"")
        left = size
        while left:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                break
            writer.write(chunk)
            left -= len(chunk)
        if left or fh.read(1):
            raise PayloadError(f"{entry.source} changed while the payload was being written")
    writer.write(_padding(size))


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def _write_header(
    writer: _HashingWriter,
    name: bytes,
    mode: int,
    size: int,
    epoch: int,
    typeflag: bytes,
    linkname: bytes,
) -> None:
    """A ustar header, preceded by a PAX header for what ustar cannot hold."""
    pax: dict[bytes, bytes] = {}
    split = _split_name(name)
    if split is None:
        pax[b"path"] = name
        split = (b"", _ascii_stub(name, 100))
    if len(linkname) > 100 or not linkname.isascii():
        pax[b"linkpath"] = linkname
        linkname = _ascii_stub(linkname, 100)
    if size > MAX_OCTAL_SIZE:
        pax[b"size"] = str(size).encode()
    if pax:
        records = b"".join(_pax_record(key, pax[key]) for key in sorted(pax))
        writer.write(_ustar(b"", b"././@PaxHeader", 0o644, len(records), epoch, b"x", b""))
        writer.write(records + _padding(len(records)))
    prefix, short = split
    writer.write(_ustar(prefix, short, mode, min(size, MAX_OCTAL_SIZE), epoch, typeflag, linkname))


def _split_name(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) fields for `name` in plain ustar, or None when it needs a PAX path."""
    if not name.isascii():
        return None
    if len(name) <= 100:
        return b"", name
    # The longest prefix that fits (a shorter one only lengthens the rest); a folder's trailing
    # slash is never the cut, the name field must not be empty.
    cut = name.rfind(b"/", 0, min(156, len(name) - 1))
    if cut > 0 and len(name) - cut - 1 <= 100:
        return name[:cut], name[cut + 1 :]
    return None


def _ascii_stub(value: bytes, length: int) -> bytes:
    """A placeholder for a field whose real value is in the PAX header."""
    return bytes(b if 0x20 <= b < 0x7F else 0x5F for b in value[:length])


def _pax_record(key: bytes, value: bytes) -> bytes:
    """`<length> <key>=<value>\\n`, where length counts the whole record, its own digits too."""
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _ustar(
    prefix: bytes,
    name: bytes,
    mode: int,
    size: int,
    epoch: int,
    typeflag: bytes,
    linkname: bytes,
) -> bytes:
    def octal(value: int, width: int) -> bytes:
        return b"%0*o\0" % (width - 1, value)

    header = b"".join(
        [
            name.ljust(100, b"\0"),
            octal(mode, 8),
            octal(0, 8),  # uid
            octal(0, 8),  # gid
            octal(size, 12),
            octal(epoch, 12),
            b" " * 8,  # checksum, computed below with these spaces in place
            typeflag,
            linkname.ljust(100, b"\0"),
            b"ustar\x0000",
            b"\0" * 32,  # uname
            b"\0" * 32,  # gname
            octal(0, 8),  # devmajor
            octal(0, 8),  # devminor
            prefix.ljust(155, b"\0"),
            b"\0" * 12,
        ]
    )
    checksum = b"%06o\0 " % sum(header)
    return header[:148] + checksum + header[156:]


def tree_entries(root: Path) -> Iterator[Entry]:
    """The entries of the folder `root` (not following symlinks), for write_payload. Anything
    but files, folders and symlinks (sockets, FIFOs, devices) is refused."""

    def walk(folder: Path, prefix: str) -> Iterator[Entry]:
        with os.scandir(folder) as listing:
            children = sorted(listing, key=lambda e: os.fsencode(e.name))
        for child in children:
            arcname = prefix + child.name
            info = child.stat(follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                yield Entry(arcname, "symlink", target=os.readlink(child.path))
            elif stat.S_ISDIR(info.st_mode):
                yield Entry(arcname, "dir")
                yield from walk(Path(child.path), arcname + "/")
            elif stat.S_ISREG(info.st_mode):
                yield Entry(arcname, "file", Path(child.path), bool(info.st_mode & 0o111))
            else:
                raise PayloadError(
                    f"{child.path} is neither a file, a folder nor a symlink; "
                    "remove it from the app"
                )

    return walk(root, "")


def append(base_binary: Path, payload_writer: PayloadWriter, dest: Path) -> Trailer:
    """Write `dest` = base binary + payload + trailer: into a temp file beside `dest`, fsynced,
    then renamed into place, so `dest` is never half-written; the temp file is removed on any
    exception, KeyboardInterrupt included. `payload_writer(out)` writes the payload (e.g.
    `lambda out: write_payload(out, entries, epoch)`) and returns its (raw sha256, size)."""
    short = base_binary.stat().st_size < TRAILER_SIZE  # too short to carry an app (test bases)
    if not short and read_trailer(base_binary) is not None:
        raise PayloadError(f"{base_binary} already carries an app; use the base binary itself")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            with base_binary.open("rb") as base:
                while chunk := base.read(CHUNK):
                    out.write(chunk)
            offset = out.tell()
            digest, size = payload_writer(out)
            if out.tell() - offset != size or len(digest) != 32:
                raise PayloadError("the payload writer's size or sha256 does not match its output")
            out.write(TRAILER.pack(MAGIC, size, 0, digest))
            out.flush()
            os.fchmod(out.fileno(), stat.S_IMODE(base_binary.stat().st_mode) | 0o111)
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
    return Trailer(offset, size, digest)


def read_trailer(path: Path) -> Trailer | None:
    """The trailer at the end of `path`, or None for a plain base binary (no magic there)."""
    with path.open("rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        if file_size < TRAILER_SIZE:
            raise Truncated(
                f"{path} is truncated: {file_size} bytes, shorter than a payload trailer; "
                "copy the binary again or rebuild it"
            )
        fh.seek(file_size - TRAILER_SIZE)
        magic, size, reserved, digest = TRAILER.unpack(fh.read(TRAILER_SIZE))
    if magic != MAGIC:
        if magic[:-1] == MAGIC_PREFIX:
            raise UnknownFormat(
                f"{path} carries an app of payload format version {magic[-1]}; this reader "
                f"knows version {MAGIC[-1]}: use a matching builder"
            )
        return None
    if reserved != 0:
        raise UnknownFormat(f"{path} has a payload trailer with unknown flags; use a newer reader")
    if size > file_size - TRAILER_SIZE:
        raise Truncated(
            f"the app embedded in {path} is truncated: its trailer announces {size} bytes, the "
            f"file holds {file_size - TRAILER_SIZE}; copy the binary again or rebuild it"
        )
    return Trailer(file_size - TRAILER_SIZE - size, size, digest)


def verify(path: Path) -> Trailer:
    """The trailer of `path` once its payload hashes to the trailer's sha256."""
    trailer = read_trailer(path)
    if trailer is None:
        raise PayloadError(f"{path} carries no app (no payload trailer at its end)")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        fh.seek(trailer.offset)
        left = trailer.size
        while left and (chunk := fh.read(min(CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)
    if digest.digest() != trailer.sha256:
        raise Damaged(
            f"the app embedded in {path} is damaged: sha256 {digest.hexdigest()} expected "
            f"{trailer.hexdigest}; copy the binary again or rebuild it"
        )
    return trailer
