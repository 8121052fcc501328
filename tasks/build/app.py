"""The app's deployment facts for this run: read once from the `app_facts` setting's file and,
once the app is archived, checked against it (a template, a plugin or a SQL file the facts name
must be there). No file: the app has no writable links, jobs or programs to declare."""

from __future__ import annotations

from tasks.core.pipeline import Pipeline
from tasks.formats import app_facts
from tasks.formats.app_facts import Facts


def facts(pipe: Pipeline) -> Facts:
    def read() -> Facts:
        path = pipe.settings.app_facts
        return app_facts.load(path) if path.is_file() else Facts()

    found: Facts = pipe.once("app-facts", read)
    return found


def checked_facts(pipe: Pipeline) -> Facts:
    """The facts, checked against package/ (call after the archive stage)."""
    found = facts(pipe)
    if pipe.settings.app_facts.is_file():
        app_facts.check_against_app(found, pipe.settings.package_dir, str(pipe.settings.app_facts))
    return found


def health_path(pipe: Pipeline) -> str:
    return pipe.settings.health_path or facts(pipe).health_path
