"""up / down: run the deployment bundle (orangescrum-ee/docker-compose.yaml) with an env file.

`up` builds what is stale first (it depends on the runtime stage) and points the bundle at the
image just built. `down` stops and removes the containers and never the volumes: data survives.
"""

from __future__ import annotations

from typing import Any

from tasks.errors import ConfigError
from tasks.pipeline import Pipeline, action


def compose(pipe: Pipeline, *args: str) -> None:
    """`docker compose` on the bundle, with the env file, profiles and project of the settings."""
    settings = pipe.settings
    env_file = settings.env_file
    if not env_file.is_file():
        raise ConfigError(
            f"env file {env_file} does not exist: copy orangescrum-ee/.env.example to "
            "orangescrum-ee/.env and fill it in, or pass env_file=PATH"
        )
    profiles = [
        w for p in settings.compose_profiles.replace(",", " ").split() for w in ("--profile", p)
    ]
    pipe.containers.compose(
        settings.bundle_dir / "docker-compose.yaml",
        env_file,
        ["--project-name", settings.compose_project, *profiles, *args],
        {"APP_IMAGE": f"{settings.runtime_image}:latest"},
    )


def up(pipe: Pipeline) -> None:
    compose(pipe, "up", "--detach", "--wait", "--remove-orphans")
    print(f"up: bundle running with {pipe.settings.runtime_image}:latest")


def down(pipe: Pipeline) -> None:
    compose(pipe, "down", "--remove-orphans")  # never --volumes: uploads and the database stay
    print("down: containers removed; volumes kept")


def up_task(pipe: Pipeline) -> dict[str, Any]:
    return {
        "doc": "start the deployment bundle with env_file (builds what is stale first)",
        "actions": [action(pipe, lambda: up(pipe))],
        "task_dep": ["runtime"],
        "uptodate": [False],
        "verbosity": 2,
    }


def down_task(pipe: Pipeline) -> dict[str, Any]:
    return {
        "doc": "stop the deployment bundle; volumes (uploads, database) are kept",
        "actions": [action(pipe, lambda: down(pipe))],
        "uptodate": [False],
        "verbosity": 2,
    }
