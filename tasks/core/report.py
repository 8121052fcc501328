"""doit reporter: the usual `.  stage` / `-- stage` lines, failures as one clear message.

A stage that fails with a known error prints `durango: <stage> failed: <message>` and nothing
else; only an unexpected exception (a bug) keeps its traceback.
"""

from __future__ import annotations

import sys

from doit.exceptions import BaseFail, TaskFailed
from doit.reporter import ConsoleReporter
from doit.task import Task


class DurangoReporter(ConsoleReporter):
    desc = "durango: doit's console output with one-line failures"

    def add_failure(self, task: Task, fail: BaseFail) -> None:
        if not fail.report:
            return
        self.failures.append({"task": task, "exception": fail})
        if isinstance(fail, TaskFailed) and not fail.traceback:
            message = fail.message
        else:
            message = fail.get_msg()
        sys.stderr.write(f"durango: {task.name} failed: {message.rstrip()}\n")

    def complete_run(self) -> None:
        if self.runtime_errors:
            sys.stderr.write("durango: " + "\n".join(self.runtime_errors) + "\n")
