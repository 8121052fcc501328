"""One lock per bundle project for every operation on its data: backup, restore, tenant-add and
tenant-remove, prune, deploy and rollback, and backup_volumes.sh (which runs outside doit's
checkout lock, from cron). Held from the first check to the last write; a second operation
waits and says so, or, with wait=False, refuses in one line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tasks.core import locks
from tasks.core.pipeline import Pipeline


@contextlib.contextmanager
def held(pipe: Pipeline, operation: str, wait: bool = True) -> Iterator[None]:
    project = pipe.settings.compose_project
    where = pipe.settings.state_dir / "locks" / f"{project}.lock"
    what = f"another operation on the data of {project} is running"
    with locks.held(where, what, wait=wait, holder=operation):
        yield
