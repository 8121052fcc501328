"""Per-run shared state and the glue between stages and doit.

`Pipeline` carries the settings, the engine it is given (anything that meets the protocols of
core/ports.py: the real adapter, or a test's fake), the clock, the hash cache and the artefact
records (small JSON files under .durango/). `StageCheck` is the `uptodate` callable of every
stage: it asks the stage why it would run and shows that reason in `doit info`. `action` turns a
stage's typed errors into doit failures with one clear message.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TypeVar, cast

from doit.exceptions import TaskFailed

from tasks.core import locks
from tasks.core.errors import DurangoError
from tasks.core.files import atomic_write_text
from tasks.core.hashcache import HashCache
from tasks.core.ports import ContainerEngine, ImageEngine
from tasks.core.settings import Settings

T = TypeVar("T")

# doit commands that only read state: they never wait for the checkout lock.
READ_ONLY_COMMANDS = {"list", "info", "help", "dumpdb", "tabcompletion"}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Pipeline:
    """What the stages of one doit run share. The engine (images) and containers (the bundle's
    side of the same engine) are given, never built here: tests give fakes."""

    def __init__(
        self,
        settings: Settings,
        engine: ImageEngine,
        containers: ContainerEngine,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.containers = containers
        self.clock = clock
        self.hashes = HashCache(settings.state_dir / "hashes.json")
        self.memo: dict[str, object] = {}

    def record_path(self, name: str) -> Path:
        return self.settings.state_dir / f"{name}.json"

    def read_record(self, name: str) -> dict[str, str] | None:
        """A stage's record (strings by name), or None when it is missing or unreadable."""
        try:
            data = json.loads(self.record_path(name).read_text())
        except (OSError, ValueError):
            return None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None

    def write_record(self, name: str, record: dict[str, str]) -> None:
        atomic_write_text(self.record_path(name), json.dumps(record, indent=2, sort_keys=True))

    def drop_record(self, name: str) -> None:
        self.record_path(name).unlink(missing_ok=True)

    def fresh(self) -> None:
        """Forget what the engine said: with `doit -n`, other processes build in between."""
        self.engine.forget()

    def once(self, name: str, compute: Callable[[], T]) -> T:
        """Compute a fact once per run (source commit, context digests)."""
        if name not in self.memo:
            self.memo[name] = compute()
        return cast(T, self.memo[name])


class StageCheck:
    """doit `uptodate` callable: up to date when the stage's `why` finds no reason to run.

    Its text is the reason, which is what `doit info <stage>` prints.
    """

    def __init__(self, pipe: Pipeline, why: Callable[[], str | None]) -> None:
        self._pipe = pipe
        self._why = why
        self.reason = "not checked yet"

    def __call__(self) -> bool:
        self._pipe.fresh()
        try:
            reason = self._why()
        except DurangoError as exc:  # the action will meet it again and report it
            reason = f"cannot check: {exc}"
        self.reason = reason or "up to date"
        return reason is None

    def __str__(self) -> str:
        return self.reason

    __repr__ = __str__


# A doit task declaration (doit reads it as a plain dict).
TaskDict = dict[str, object]


def command_task(
    pipe: Pipeline,
    doc: str,
    run: Callable[..., object],
    why: Callable[[], str | None] | None = None,
    task_dep: Sequence[str] = (),
    params: Sequence[Mapping[str, object]] = (),
) -> TaskDict:
    """The doit task of everything that is not an image stage. With `why` it is up to date
    while `why` finds no reason to run (and `doit info` shows the reason); without, it always
    runs (up, down, backup, restore)."""
    task: TaskDict = {
        "doc": doc,
        "actions": [action(pipe, run)],
        "uptodate": [StageCheck(pipe, why)] if why else [False],
        "task_dep": list(task_dep),
        "verbosity": 2,
    }
    if params:
        task["params"] = [dict(p) for p in params]
    return task


def action(pipe: Pipeline, stage: Callable[..., object]) -> Callable[..., object]:
    """Wrap a stage function as a doit python-action: typed errors become a clean failure.

    doit reads the stage's signature through the wrapper (functools.wraps), so a stage that
    names task parameters (`doit restore --confirm`) receives them.
    """

    @functools.wraps(stage)
    def run(**params: object) -> object:
        pipe.fresh()
        try:
            result = stage(**params)
        except DurangoError as exc:
            return TaskFailed(str(exc))
        except KeyboardInterrupt:
            print("durango: interrupted; the stage was not recorded as done", file=sys.stderr)
            raise SystemExit(130) from None
        return result if isinstance(result, dict) else None

    return run


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _interrupt_without_traceback(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        print("durango: interrupted", file=sys.stderr)
    else:
        sys.__excepthook__(kind, value, tb)


_lock_handle: list[IO[str]] = []


def hold_checkout_lock(state_dir: Path) -> None:
    """One mutating doit per checkout: a second one waits here, before reading any state."""
    what = f"another doit is running in {state_dir.parent}"
    _lock_handle.append(locks.acquire(state_dir / "lock", what))


# doit's own sub-commands: any other word is a task name or an option's value.
DOIT_COMMANDS = READ_ONLY_COMMANDS | {"run", "forget", "clean", "ignore", "auto", "strace"}
DOIT_COMMANDS |= {"reset-dep"}


def doit_command(argv: list[str]) -> str:
    """The doit sub-command named on the command line ('run' when none is). Option values
    (`-n 2`, `--backend json`) and task names are not commands."""
    for word in argv[1:]:
        if word in DOIT_COMMANDS:
            return word
    return "run"


def start(
    settings: Settings, argv: list[str], engine: ImageEngine, containers: ContainerEngine
) -> Pipeline:
    """Prepare a run: SIGTERM behaves like Ctrl-C, and mutating commands take the lock."""
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    sys.excepthook = _interrupt_without_traceback
    if doit_command(argv) not in READ_ONLY_COMMANDS:
        hold_checkout_lock(settings.state_dir)
    return Pipeline(settings, engine, containers)
