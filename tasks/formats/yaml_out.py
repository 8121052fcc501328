"""A small YAML writer for what the pipeline renders (Swarm stacks, Kubernetes manifests): block
mappings and sequences of strings, numbers and booleans. Every string is double-quoted in JSON's
escapes, which YAML reads the same way, so no value is ever taken for a number, a boolean or a
date (`"on"`, `"0750"`, `"1e3"` stay strings)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from tasks.core.errors import FormatError

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*\Z")
_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _key(key: object) -> str:
    """A mapping key, plain where YAML cannot take it for anything but a string."""
    text = str(key)
    return text if _PLAIN_KEY.match(text) and text.lower() not in _WORDS else _scalar(text)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    raise FormatError(f"yaml: cannot write a {type(value).__name__}")


def _lines(value: object, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, Mapping):
        if not value:
            return [pad + "{}"]
        out = []
        for key, item in value.items():
            head = f"{pad}{_key(key)}:"
            if isinstance(item, Mapping | list | tuple) and item:
                out.append(head)
                out.extend(_lines(item, indent + 2))
            else:
                out.append(f"{head} {_inline(item)}")
        return out
    if isinstance(value, list | tuple):
        if not value:
            return [pad + "[]"]
        out = []
        for item in value:
            if isinstance(item, Mapping | list | tuple) and item:
                nested = _lines(item, indent + 2)
                out.append(f"{pad}- {nested[0].lstrip()}")
                out.extend(nested[1:])
            else:
                out.append(f"{pad}- {_inline(item)}")
        return out
    return [pad + _scalar(value)]


def _inline(value: object) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    return _scalar(value)


def dump(value: Mapping[str, object] | Sequence[object]) -> str:
    """One YAML document."""
    return "\n".join(_lines(value, 0)) + "\n"


def dump_all(documents: Sequence[Mapping[str, object]]) -> str:
    """Several documents, each after a `---` line."""
    return "".join(f"---\n{dump(doc)}" for doc in documents)
