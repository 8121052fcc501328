"""Per-run shared state and the glue between stages and doit.

`Pipeline` carries the settings, the engine adapter, the hash cache and the artefact records
(small JSON files under .durango/). `StageCheck` is the `uptodate` callable of every stage: it
asks the stage why it would run and shows that reason in `doit info`. `action` turns a stage's
typed errors into doit failures with one clear message.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TypeVar, cast

from doit.exceptions import TaskFailed

from tasks.containers import Containers
from tasks.content import HashCache, atomic_write_text
from tasks.engine import Engine
from tasks.errors import DurangoError
from tasks.registry import RegistryCache
from tasks.settings import Settings

T = TypeVar("T")

# doit commands that only read state: they never wait for the checkout lock.
READ_ONLY_COMMANDS = {"list", "info", "help", "dumpdb", "tabcompletion"}


class Pipeline:
    """What the stages of one doit run share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hashes = HashCache(settings.state_dir / "hashes.json")
        self._engine: Engine | None = None
        self.memo: dict[str, object] = {}

    @property
    def registry(self) -> RegistryCache | None:
        """The shared build cache, when `registry` is set."""
        if not self.settings.registry:
            return None
        settings = self.settings
        return self.once(
            "registry",
            lambda: RegistryCache(self.engine, settings.registry, settings.registry_required),
        )

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine()
        return self._engine

    @property
    def containers(self) -> Containers:
        """The bundle's containers and volumes, on the same engine connection."""
        return Containers(self.engine)

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
        if self._engine is not None:
            self._engine.forget()

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
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / "lock", "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        print(
            f"durango: another doit is running in {state_dir.parent} ({holder}); "
            "waiting for it to finish (Ctrl-C to give up)",
            file=sys.stderr,
            flush=True,
        )
        fcntl.flock(handle, fcntl.LOCK_EX)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    _lock_handle.append(handle)


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


def start(settings: Settings, argv: list[str]) -> Pipeline:
    """Prepare a run: SIGTERM behaves like Ctrl-C, and mutating commands take the lock."""
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    sys.excepthook = _interrupt_without_traceback
    if doit_command(argv) not in READ_ONLY_COMMANDS:
        hold_checkout_lock(settings.state_dir)
    return Pipeline(settings)
