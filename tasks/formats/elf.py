"""What a binary needs to load: the NEEDED entries of its ELF dynamic section, read from the file
(no readelf on the machine required). A binary without a dynamic section is fully static."""

from __future__ import annotations

import struct
from pathlib import Path

from tasks.core.errors import FormatError

PT_DYNAMIC, PT_INTERP = 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB = 0, 1, 5


def linkage(path: Path) -> dict[str, object]:
    """{"static": bool, "interpreter": str, "needed": [...]} of a 64-bit little-endian ELF file."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise FormatError(f"{path.name} is not a 64-bit little-endian ELF binary")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    segments = []
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        segments.append((p_type, p_offset, p_vaddr, p_filesz))
    interpreter = next(
        (data[o : o + n].rstrip(b"\0").decode() for t, o, _, n in segments if t == PT_INTERP), ""
    )
    dynamic = next(((o, n) for t, o, _, n in segments if t == PT_DYNAMIC), None)
    if dynamic is None:
        return {"static": True, "interpreter": interpreter, "needed": []}
    entries = []
    offset, size = dynamic
    for at in range(offset, offset + size, 16):
        tag, value = struct.unpack_from("<qQ", data, at)
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    strtab = next(value for tag, value in entries if tag == DT_STRTAB)
    # DT_STRTAB is an address: find the file offset of the segment that maps it
    base = next(o + strtab - v for t, o, v, n in segments if t == 1 and v <= strtab < v + n)
    needed = [
        data[base + value : data.index(b"\0", base + value)].decode()
        for tag, value in entries
        if tag == DT_NEEDED
    ]
    return {"static": not needed and not interpreter, "interpreter": interpreter, "needed": needed}
