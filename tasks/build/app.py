"""The app's deployment facts for this run: from the `app_facts` setting's file, else the app's
own `app.toml` (its repository's, as archived), else the bundle's (`orangescrum-ee/app.toml`);
read once and, once the app is archived, checked against it (a template, a plugin or a SQL file
the facts name must be there). No file at all: the app declares nothing."""

from __future__ import annotations

from pathlib import Path

from tasks.core.pipeline import Pipeline
from tasks.formats import app_facts
from tasks.formats.app_facts import Facts


def facts_path(pipe: Pipeline) -> Path:
    """Where this run's facts come from (the file may not exist)."""
    settings = pipe.settings
    if settings.app_facts is not None:
        return settings.app_facts
    own = settings.package_dir / "app.toml"
    return own if own.is_file() else settings.bundle_dir / "app.toml"


def facts(pipe: Pipeline) -> Facts:
    def read() -> Facts:
        path = facts_path(pipe)
        return app_facts.load(path) if path.is_file() else Facts()

    found: Facts = pipe.once("app-facts", read)
    return found


def checked_facts(pipe: Pipeline) -> Facts:
    """The facts, checked against package/ (call after the archive stage)."""
    found = facts(pipe)
    path = facts_path(pipe)
    if path.is_file():
        app_facts.check_against_app(found, pipe.settings.package_dir, str(path))
    return found


def health_path(pipe: Pipeline) -> str:
    return pipe.settings.health_path or facts(pipe).health_path
