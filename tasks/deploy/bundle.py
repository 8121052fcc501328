"""up / down: run the deployment bundle (orangescrum-ee/docker-compose.yaml) with an env file.

`up` builds what is stale first (it depends on the runtime stage) and points the bundle at the
image just built, unless the project's live state pins one (a restore runs the image its backup
names). `down` stops and removes the containers and never the volumes: data survives. Every
compose call gets the same environment (`compose_env`), and the env file is refused before
compose runs when compose would change one of its values (a lone `$`).
"""

from __future__ import annotations

from tasks.core.errors import ConfigError
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.deploy import live
from tasks.formats import compose_volumes, env_file

DB_SERVICE = "orangescrum-db"
# The services that run the app (and write its volumes); the database is not one of them.
APP_SERVICES = ("orangescrum-app", "orangescrum-scheduler", "orangescrum-queue")


def env(pipe: Pipeline) -> env_file.EnvFile:
    """The bundle's env file, read the way compose reads it, and checked."""
    path = pipe.settings.env_file
    if not path.is_file():
        raise ConfigError(
            f"env file {path} does not exist: copy orangescrum-ee/.env.example to "
            "orangescrum-ee/.env and fill it in, or pass env_file=PATH"
        )
    found = env_file.read(path)
    found.check()
    return found


def bundled(pipe: Pipeline) -> bool:
    """The database is the bundle's own exactly when DB_HOST names its service (compose's
    default), whatever happens to be running."""
    return (env(pipe).get("DB_HOST") or DB_SERVICE) == DB_SERVICE


def database_name(pipe: Pipeline) -> str:
    """The database the app uses now: a restore's (live state) or the env file's."""
    name = live.read(pipe).get("DB_NAME") or env(pipe).get("DB_NAME")
    if not name:
        raise ConfigError(f"{pipe.settings.env_file}: DB_NAME is not set")
    return name


def compose_env(pipe: Pipeline, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """What every compose call of the bundle gets over the env file: the image, the env file
    itself for the containers, the live state, and DB_INITIAL_NAME (the env file's database:
    what a bundled server creates on its first start, whichever generation is live)."""
    settings = pipe.settings
    base = {
        "APP_IMAGE": f"{settings.runtime_image}:latest",
        "APP_ENV_FILE": str(settings.env_file),
        "DB_INITIAL_NAME": env(pipe).get("DB_NAME"),
    }
    return {**base, **live.read(pipe), **(overrides or {})}


def _args(pipe: Pipeline, *args: str) -> list[str]:
    settings = pipe.settings
    profiles = [
        w for p in settings.compose_profiles.replace(",", " ").split() for w in ("--profile", p)
    ]
    return ["--project-name", settings.compose_project, *profiles, *args]


def compose(pipe: Pipeline, *args: str, overrides: dict[str, str] | None = None) -> None:
    """`docker compose` on the bundle, with the env file, profiles and project of the settings,
    the project's live state (a restore's volumes and database, deploy/live.py) over them, and
    `overrides` over everything."""
    env(pipe)
    pipe.containers.compose(
        pipe.settings.bundle_dir / "docker-compose.yaml",
        pipe.settings.env_file,
        _args(pipe, *args),
        compose_env(pipe, overrides),
    )


def config(pipe: Pipeline, overrides: dict[str, str] | None = None) -> dict[str, object]:
    """The compose file as compose reads it with the same environment as `compose`."""
    env(pipe)
    return pipe.containers.compose_config(
        pipe.settings.bundle_dir / "docker-compose.yaml",
        pipe.settings.env_file,
        _args(pipe),
        compose_env(pipe, overrides),
    )


def volumes(pipe: Pipeline, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Short name -> engine name of the bundle's volumes, as compose will name them now."""
    return compose_volumes.volumes(config(pipe, overrides))


def up(pipe: Pipeline) -> None:
    compose(pipe, "up", "--detach", "--wait", "--remove-orphans")
    image = compose_env(pipe)["APP_IMAGE"]
    print(f"up: bundle running with {image}")


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
