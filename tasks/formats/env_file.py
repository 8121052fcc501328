"""The one reader of the bundle's env files (`orangescrum-ee/.env`, `tenants/<name>.env`,
`tenants/server.env`), read the way `docker compose --env-file` reads them, so that what the
bundle operations decide (bundled or external database, the port, the database's name, the
password they hand to PostgreSQL's clients) is what compose will use.

Lines are `NAME=value` (an `export ` before the name is allowed), `#` comments and blank lines.
A value may be in single quotes (literal) or double quotes (`\\n`, `\\"`, `\\\\` escapes); an
unquoted value ends before ` #`. Outside single quotes compose expands `$NAME` and turns `$$`
into `$`: the reader turns `$$` into `$` too, and `check` refuses a lone `$` (compose would
expand it and pass on something else, with only a warning).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.errors import ConfigError, FormatError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_ESCAPES = {"n": "\n", '"': '"', "\\": "\\", "t": "\t", "r": "\r"}


@dataclass(frozen=True)
class EnvFile:
    """The values of an env file, and the names whose value compose would expand."""

    origin: str
    values: dict[str, str]
    expanded: tuple[str, ...] = field(default=())

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def check(self) -> None:
        """ConfigError (one line, naming the key) when compose would change a value."""
        if self.expanded:
            name = self.expanded[0]
            raise ConfigError(
                f"{self.origin}: the value of {name} contains `$`, which docker compose would "
                "expand as a variable and pass on changed; write `$$` for a `$`, or choose a "
                "value without one"
            )


def parse(text: str, origin: str = "env file") -> EnvFile:
    """The file's values, the last line winning; FormatError naming the line when one is not
    `NAME=value` or a quote is not closed."""
    values: dict[str, str] = {}
    expanded: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, rest = line.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise FormatError(f"{origin} line {number}: not of the form NAME=value")
        value, literal = _value(rest.strip(), f"{origin} line {number}")
        if not literal:
            if _lone_dollar(value):
                expanded.append(name)
            value = value.replace("$$", "$")
        values[name] = value
    return EnvFile(origin, values, tuple(dict.fromkeys(expanded)))


def _lone_dollar(value: str) -> bool:
    """A `$` that is not half of a `$$`."""
    return any(len(run) % 2 for run in re.findall(r"\$+", value))


def _value(text: str, where: str) -> tuple[str, bool]:
    """(value, literal): single-quoted values are literal, compose never expands them."""
    if text[:1] == "'":
        end = text.find("'", 1)
        if end < 0:
            raise FormatError(f"{where}: the single quote is not closed")
        return text[1:end], True
    if text[:1] == '"':
        out, i = [], 1
        while i < len(text):
            char = text[i]
            if char == "\\" and i + 1 < len(text):
                out.append(_ESCAPES.get(text[i + 1], "\\" + text[i + 1]))
                i += 2
                continue
            if char == '"':
                return "".join(out), False
            out.append(char)
            i += 1
        raise FormatError(f"{where}: the double quote is not closed")
    comment = re.search(r"\s#", text)
    return (text[: comment.start()] if comment else text).strip(), False


def read(path: Path) -> EnvFile:
    """An env file's values (ConfigError when it cannot be read)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
    return parse(text, str(path))


def line(name: str, value: str) -> str:
    """One `NAME=value` line for an env file this tool writes. A value compose or a reader could
    take differently (spaces, quotes, `$`, `#`, line breaks) is refused, naming the key."""
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} is not an env file name")
    if not re.fullmatch(r"[A-Za-z0-9_.:/@+,=-]*", value):
        raise ConfigError(f"the value of {name} has characters an env file cannot carry as is")
    return f"{name}={value}"
