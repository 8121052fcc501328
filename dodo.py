"""Durango Builder pipeline: archive -> base -> embed -> extract -> runtime.

Each stage is keyed on the content it reads; `doit` reruns exactly the stale ones.
Settings: `doit key=value`, DURANGO_<KEY>, [tool.durango] in pyproject.toml
(tasks/core/settings.py).
"""

import sys
from pathlib import Path

from doit import get_var

from tasks.build import archive, base, embed, extract, publish, runtime, verify
from tasks.core.errors import ConfigError
from tasks.core.pipeline import start
from tasks.core.report import DurangoReporter
from tasks.core.settings import cli_vars_from_argv, load_settings
from tasks.deploy import (
    backup,
    bundle,
    deploy,
    kube,
    proxy,
    prune,
    releases,
    restore,
    swarm,
    tenants,
)
from tasks.engine.containers import Containers
from tasks.engine.images import Engine
from tasks.engine.rollout import Rollout
from tasks.engine.swarm import Swarm

ROOT = Path(__file__).resolve().parent

DOIT_CONFIG = {
    "dep_file": ".doit.db",
    "backend": "sqlite3",
    "default_tasks": ["runtime"],
    "reporter": DurangoReporter,
    "sort": "definition",
}

ENGINE = Engine()  # connects on first use: `doit list` never waits for the engine
try:
    SETTINGS = load_settings(ROOT, cli_vars_from_argv(sys.argv, get_var))
    PIPELINE = start(SETTINGS, sys.argv, ENGINE, Containers(ENGINE))
except ConfigError as exc:
    sys.exit(f"durango: configuration error: {exc}")


# The pipeline, in order; then what runs the bundle and keeps its data.
def task_archive():
    return archive.task(PIPELINE)


def task_base():
    return base.task(PIPELINE)


def task_embed():
    return embed.task(PIPELINE)


def task_extract():
    return extract.task(PIPELINE)


def task_runtime():
    return runtime.task(PIPELINE)


def task_publish():
    return publish.task(PIPELINE)


def task_verify():
    return verify.task(PIPELINE)


def task_up():
    return bundle.task(PIPELINE, "up")


def task_down():
    return bundle.task(PIPELINE, "down")


def task_backup():
    return backup.task(PIPELINE, "backup")


def task_restore():
    return restore.task(PIPELINE)


def task_backups():
    return backup.task(PIPELINE, "backups")


def task_restores():
    return restore.task(PIPELINE, "restores")


def task_restore_undo():
    return restore.task(PIPELINE, "restore-undo")


def task_restore_drop():
    return restore.task(PIPELINE, "restore-drop")


def task_prune():
    return prune.task(PIPELINE)


def task_tenant_add():
    return tenants.task(PIPELINE, "tenant-add")


def task_tenants():
    return tenants.task(PIPELINE, "tenants")


def task_tenant_remove():
    return tenants.task(PIPELINE, "tenant-remove")


# Releases: deploy and roll back with no downtime (docs/RELEASES.md).
def task_proxy():
    return proxy.task(PIPELINE)


def task_deploy():
    return deploy.task(PIPELINE, Rollout(ENGINE), "deploy")


def task_releases():
    return releases.task(PIPELINE)


def task_rollback():
    return deploy.task(PIPELINE, Rollout(ENGINE), "rollback")


def task_swarm_manager():
    return swarm.task(PIPELINE, Swarm(ENGINE, SETTINGS.swarm_host), "swarm-manager")


def task_swarm_deploy():
    return swarm.task(PIPELINE, Swarm(ENGINE, SETTINGS.swarm_host), "swarm-deploy")


def task_kube():
    return kube.task(PIPELINE)
