"""The one reader of Dockerfiles: logical lines, instructions with their flags, the images the
FROM lines name and the context paths COPY/ADD read. Every stage reads Dockerfiles through it.

Follows the Dockerfile reference: a line ending in the escape character (`\\`, or the one a
`# escape=` directive names) continues on the next; comment lines and empty lines inside a
continuation are dropped; instruction keywords are case-insensitive.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Instruction:
    """One logical line: `COPY --chown=1 a b /c` -> keyword COPY, flags {chown: 1}, words."""

    keyword: str
    flags: dict[str, str] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)


def _escape_char(lines: list[str]) -> str:
    """The `# escape=` parser directive, which may only appear before anything else."""
    for line in lines:
        match = re.match(r"#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$", line.strip())
        if not match:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            return match.group(2)
    return "\\"


def logical_lines(text: str) -> list[str]:
    """Continuations joined, comments and blank lines dropped."""
    lines = text.splitlines()
    escape = _escape_char(lines)
    result: list[str] = []
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and pending):
            continue
        if not stripped:
            continue
        if stripped.endswith(escape):
            pending.append(stripped[: -len(escape)].strip())
            continue
        pending.append(stripped)
        result.append(" ".join(part for part in pending if part))
        pending = []
    if pending:
        result.append(" ".join(part for part in pending if part))
    return result


def _split(rest: str) -> list[str]:
    if rest.startswith("["):
        try:
            parsed = json.loads(rest)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(w, str) for w in parsed):
            return parsed
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


def instructions(text: str) -> list[Instruction]:
    """Every instruction of a Dockerfile, in order."""
    result = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        flags: dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            name = name.lower()
            flags[name] = f"{flags[name]} {value}" if name in flags else value
            rest = rest.strip()
        result.append(Instruction(keyword.upper(), flags, _split(rest)))
    return result


def _substitute(word: str, args: Mapping[str, str]) -> str:
    """`$NAME`, `${NAME}` and `${NAME:-default}` with the values of `args`."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if args.get(name):
            return args[name]
        return match.group(3) or ""

    return re.sub(r"\$(?:(\w+)|\{(\w+)(?::-([^}]*))?\})", value, word)


def from_images(text: str, build_args: Mapping[str, str]) -> list[str]:
    """The images FROM lines name, ARGs substituted; build stages and `scratch` left out."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    for ins in instructions(text):
        if ins.keyword == "ARG" and not images and ins.words:
            name, _, default = ins.words[0].partition("=")
            args[name] = build_args.get(name, default)
        elif ins.keyword == "FROM" and ins.words:
            image = _substitute(ins.words[0], {**build_args, **args})
            if len(ins.words) >= 3 and ins.words[1].upper() == "AS":
                stages.add(ins.words[2].lower())
            if image.lower() not in stages and image != "scratch" and image not in images:
                images.append(image)
    return images


def copied_sources(text: str) -> list[str] | None:
    """Context paths the COPY/ADD lines read; None when the build may read any of the context
    (a RUN bind mount of it)."""
    sources: list[str] = []
    for ins in instructions(text):
        if ins.keyword == "RUN":
            mount = ins.flags.get("mount", "")
            if "type=bind" in mount and "from=" not in mount:
                return None
        if ins.keyword not in ("COPY", "ADD") or "from" in ins.flags:
            continue
        sources += [path.rstrip("/") or "." for path in ins.words[:-1]]
    return sources
