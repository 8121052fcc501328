"""The appended app payload (tasks/formats/payload.py): the shared vector the Go reader extracts
is exactly what this writer produces, and truncation, damage and odd names are refused in one line.

`REGENERATE_PAYLOAD_VECTOR=1 pytest tests/unit/test_payload_format.py` rewrites the vector
(builder/frankenphp/payload/testdata/payload.tar and app.bin) from its tree.json.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tasks.formats import payload
from tasks.formats.payload import Entry

VECTOR = Path(__file__).resolve().parents[2] / "builder/frankenphp/payload/testdata"


def vector_entries() -> tuple[list[Entry], int, bytes]:
    """The vector's entries, epoch and fake base binary, from tree.json."""
    tree = json.loads((VECTOR / "tree.json").read_text())
    entries = []
    for item in tree["entries"]:
        if item["kind"] == "file":
            content = (item["text"] * item.get("repeat", 1)).encode()
            entries.append(Entry(item["path"], "file", content, item.get("executable", False)))
        else:
            entries.append(Entry(item["path"], item["kind"], target=item.get("target", "")))
    return entries, tree["epoch"], tree["base"].encode()


def build_vector(out_dir: Path) -> None:
    entries, epoch, base = vector_entries()
    tar = io.BytesIO()
    payload.write_payload(tar, entries, epoch)
    (out_dir / "payload.tar").write_bytes(tar.getvalue())
    (out_dir / "base").write_bytes(base)
    payload.append(
        out_dir / "base",
        lambda out: payload.write_payload(out, entries, epoch),
        out_dir / "app.bin",
    )
    (out_dir / "base").unlink()


def test_vector_is_what_the_writer_produces(tmp_path: Path) -> None:
    if os.environ.get("REGENERATE_PAYLOAD_VECTOR") == "1":
        build_vector(VECTOR)
    build_vector(tmp_path)
    for name in ("payload.tar", "app.bin"):
        assert (tmp_path / name).read_bytes() == (VECTOR / name).read_bytes(), (
            f"{name} differs from the committed vector; if the format changed on purpose, "
            "regenerate it with REGENERATE_PAYLOAD_VECTOR=1"
        )


def test_vector_reads_back_with_standard_tar() -> None:
    entries, epoch, base = vector_entries()
    data = (VECTOR / "app.bin").read_bytes()
    trailer = payload.verify(VECTOR / "app.bin")
    assert trailer.offset == len(base)
    assert (
        data[trailer.offset : trailer.offset + trailer.size]
        == (VECTOR / "payload.tar").read_bytes()
    )
    with tarfile.open(VECTOR / "payload.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
        for entry in entries:
            member = members[entry.arcname]
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert member.mtime == epoch
            if entry.kind == "file":
                extracted = tar.extractfile(member)
                assert extracted is not None and extracted.read() == entry.source
                assert member.mode == (0o755 if entry.executable else 0o644)
            elif entry.kind == "symlink":
                assert member.issym() and member.linkname == entry.target
            else:
                assert member.isdir() and member.mode == 0o755
    names = [m.name for m in members.values()]
    assert names == sorted(names, key=lambda n: n.encode())
    assert "vendor/acme" in members  # missing parents are added as folders


def test_tree_on_disk_gives_the_same_bytes_whatever_its_modes_and_times(tmp_path: Path) -> None:
    entries, epoch, _ = vector_entries()
    root = tmp_path / "app"
    for entry in entries:
        path = root / entry.arcname
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry.kind == "dir":
            path.mkdir(exist_ok=True)
        elif entry.kind == "symlink":
            path.symlink_to(entry.target)
        else:
            assert isinstance(entry.source, bytes)
            path.write_bytes(entry.source)
            path.chmod(0o750 if entry.executable else 0o600)
            os.utime(path, (12345, 12345))
    from_disk = io.BytesIO()
    digest, size = payload.write_payload(from_disk, payload.tree_entries(root), epoch)
    assert from_disk.getvalue() == (VECTOR / "payload.tar").read_bytes()
    assert size == len(from_disk.getvalue())
    assert digest == payload.verify(VECTOR / "app.bin").sha256


def test_plain_base_binary_has_no_trailer(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.write_bytes(b"\x7fELF" + b"\0" * 200)
    assert payload.read_trailer(base) is None


def test_truncated_file_is_refused_in_one_line(tmp_path: Path) -> None:
    data = (VECTOR / "app.bin").read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[200:])  # a copy that lost bytes before the trailer
    with pytest.raises(payload.Truncated, match=r"truncated.*copy the binary again") as caught:
        payload.read_trailer(cut)
    assert "\n" not in str(caught.value)
    cut.write_bytes(data[-40:])
    with pytest.raises(payload.Truncated):
        payload.read_trailer(cut)


def test_damaged_payload_is_refused(tmp_path: Path) -> None:
    data = bytearray((VECTOR / "app.bin").read_bytes())
    trailer = payload.verify(VECTOR / "app.bin")
    data[trailer.offset + 600] ^= 0x01  # inside the first file's data
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    assert payload.read_trailer(bad) == trailer
    with pytest.raises(payload.Damaged, match=r"damaged: sha256 [0-9a-f]{64} expected"):
        payload.verify(bad)


def test_other_format_version_is_named(tmp_path: Path) -> None:
    data = bytearray((VECTOR / "app.bin").read_bytes())
    data[-payload.TRAILER_SIZE + 15] = 2
    other = tmp_path / "v2.bin"
    other.write_bytes(bytes(data))
    with pytest.raises(payload.UnknownFormat, match="version 2"):
        payload.read_trailer(other)


def test_append_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.write_bytes(b"base")

    def interrupted(out: object) -> tuple[bytes, int]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        payload.append(base, interrupted, tmp_path / "app")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


def test_append_refuses_a_binary_that_already_has_an_app(tmp_path: Path) -> None:
    with pytest.raises(payload.PayloadError, match="already carries an app"):
        payload.append(VECTOR / "app.bin", lambda out: (b"", 0), tmp_path / "twice")
    assert not list(tmp_path.iterdir())


def test_append_makes_an_executable(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.write_bytes(b"base")
    base.chmod(0o644)
    entries = [Entry("index.php", "file", b"<?php\n")]
    trailer = payload.append(
        base, lambda out: payload.write_payload(out, entries, 0), tmp_path / "a"
    )
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755
    assert payload.verify(tmp_path / "a") == trailer


@pytest.mark.parametrize(
    "entries",
    [
        [Entry("../escape.php", "file", b"")],
        [Entry("/etc/passwd", "file", b"")],
        [Entry("a//b", "file", b"")],
        [Entry("a/./b", "file", b"")],
        [Entry("a", "file", b""), Entry("a", "dir")],
        [Entry("a", "file", b""), Entry("a/b", "file", b"")],
        [Entry("link", "symlink")],
    ],
)
def test_unsafe_or_inconsistent_entries_are_refused(entries: list[Entry]) -> None:
    with pytest.raises(payload.PayloadError):
        payload.write_payload(io.BytesIO(), entries, 0)


def test_file_that_changes_while_written_is_refused(tmp_path: Path) -> None:
    grows = tmp_path / "grows"
    grows.write_bytes(b"x" * 10)

    class Growing(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            with grows.open("ab") as fh:
                fh.write(b"more")
            return super().write(data)

    with pytest.raises(payload.PayloadError, match="changed while"):
        payload.write_payload(Growing(), [Entry("grows", "file", grows)], 0)
