"""up / down: run the deployment bundle (orangescrum-ee/docker-compose.yaml) with an env file.

`up` builds what is stale first (it depends on the runtime stage) and points the bundle at the
image just built. `down` stops and removes the containers and never the volumes: data survives.
"""

from __future__ import annotations

from tasks.core.errors import ConfigError
from tasks.core.pipeline import Pipeline, TaskDict, command_task


def compose(pipe: Pipeline, *args: str) -> None:
    """`docker compose` on the bundle, with the env file, profiles and project of the settings."""
    settings = pipe.settings
    if not settings.env_file.is_file():
        raise ConfigError(
            f"env file {settings.env_file} does not exist: copy orangescrum-ee/.env.example to "
            "orangescrum-ee/.env and fill it in, or pass env_file=PATH"
        )
    profiles = [
        w for p in settings.compose_profiles.replace(",", " ").split() for w in ("--profile", p)
    ]
    pipe.containers.compose(
        settings.bundle_dir / "docker-compose.yaml",
        settings.env_file,
        ["--project-name", settings.compose_project, *profiles, *args],
        {"APP_IMAGE": f"{settings.runtime_image}:latest"},
    )


def up(pipe: Pipeline) -> None:
    compose(pipe, "up", "--detach", "--wait", "--remove-orphans")
    print(f"up: bundle running with {pipe.settings.runtime_image}:latest")


def down(pipe: Pipeline) -> None:
    compose(pipe, "down", "--remove-orphans")  # never --volumes: uploads and the database stay
    print("down: containers removed; volumes kept")


def task(pipe: Pipeline, name: str) -> TaskDict:
    """`up` (builds what is stale first) or `down`."""
    if name == "up":
        doc = "start the deployment bundle with env_file (builds what is stale first)"
        return command_task(pipe, doc, lambda: up(pipe), task_dep=["runtime"])
    doc = "stop the deployment bundle; volumes (uploads, database) are kept"
    return command_task(pipe, doc, lambda: down(pipe))
