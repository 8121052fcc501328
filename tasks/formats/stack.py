"""The Docker Swarm stack of a release, rendered from the bundle's facts and settings (what
`docker stack deploy -c` reads; docs/SWARM.md says why each part is as it is).

Services, named as in the bundle's compose file (so an env file's DB_HOST=orangescrum-db works):
  orangescrum-db         the bundled PostgreSQL (only when DB_HOST names it), on a manager
  orangescrum-migrate    the release's migrations: a replicated-job that runs once per deploy
                         (the deploy waits for it before the app is updated)
  orangescrum-app        N replicas, rolling updates start-first, rolled back on failure, gated
                         on the app's health path; DNS round robin (no VIP, no IPVS needed)
  orangescrum-scheduler  the app's jobs, one replica
  orangescrum-proxy      HAProxy: finds the app's tasks in Docker's DNS, checks each one's
                         health path, retries a refused request elsewhere; the published port
The database password and the salt are Swarm secrets (never in a service's environment); the
uploads, the app's written files and the sessions are on a volume driver every node shares.
`phase="migrate"` renders only what the migration job needs, for the first of the two deploys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

APP, DB, MIGRATE = "orangescrum-app", "orangescrum-db", "orangescrum-migrate"
SCHEDULER, PROXY = "orangescrum-scheduler", "orangescrum-proxy"
SHARED = {
    "app-uploads": "/data/uploads",
    "app-files": "/data/files",
    "app-sessions": "/data/sessions",
}
LOCAL = {"app-logs": "/data/logs", "app-cache": "/data/cache"}
SECRETS = ("db_password", "security_salt")
PROXY_CONFIG = "/etc/haproxy/stack.cfg"
# The entrypoint reads SECURITY_SALT from the environment: the secret's file becomes that
# variable in the entrypoint's process only (tini stays PID 1). `$$` is a `$` to the stack file.
SALT_FROM_SECRET = (
    'SECURITY_SALT="$$(cat /run/secrets/security_salt)" && export SECURITY_SALT '
    "&& exec /usr/local/bin/entrypoint.sh"
)
MIB = 1 << 20
# The proxy's health: its runtime API answers and names at least one server UP.
PROXY_HAS_SERVER = (
    "echo 'show stat' | socat stdio unix-connect:/run/haproxy/admin.sock "
    "| grep -q '^app,task[0-9]*,.*,UP'"
)


@dataclass(frozen=True)
class StackInputs:
    stack: str
    image: str  # the release: <runtime_image>:<key>
    proxy_image: str
    replicas: int
    health_path: str
    port: int  # published by the proxy on its node (host mode)
    environment: Mapping[str, str]  # the app's, secrets left out
    secrets: Mapping[str, str]  # db_password / security_salt -> the Swarm secret's name
    proxy_config: str  # the Swarm config holding the proxy's configuration
    deploy_id: str  # changes on every deploy: the migration job runs again
    db_image: str = ""  # "" : an external database
    db_user: str = ""
    db_name: str = ""
    volume_driver: str = "local"
    volume_options: Mapping[str, str] = field(default_factory=dict)
    loopback_port: int = 0  # the facts' app.loopback_http_port
    cpus: str = "2"
    memory: str = "2g"


def _escape(value: str) -> str:
    """A value as the stack file must hold it: `$` doubled (no interpolation)."""
    return value.replace("$", "$$")


def _app(inputs: StackInputs, role: str, extra: Mapping[str, str]) -> dict[str, object]:
    """What every container of the app shares: image, environment, secrets, volumes, limits."""
    environment = {k: _escape(v) for k, v in sorted(inputs.environment.items())}
    environment.update({"DB_PASSWORD_FILE": "/run/secrets/db_password", **extra})
    if role:
        environment["APP_ROLE"] = role
    volumes: list[dict[str, object]] = [
        {"type": "volume", "source": name, "target": target}
        for name, target in {**SHARED, **LOCAL}.items()
    ]
    # a tmpfs takes the mode of the folder it covers, and a stack cannot set its owner: the
    # image's /tmp (1777) is the one the app's user can write, so TMPDIR points there
    volumes.append({"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 512 * MIB}})
    environment["TMPDIR"] = "/tmp"
    service: dict[str, object] = {
        "image": inputs.image,
        "entrypoint": ["tini", "-g", "--", "sh", "-c", SALT_FROM_SECRET],
        "environment": environment,
        "secrets": [{"source": name, "target": name} for name in SECRETS],
        "volumes": volumes,
        "read_only": True,
        "cap_drop": ["ALL"],
        "networks": ["default"],
        "stop_grace_period": "30s",
    }
    if 0 < inputs.loopback_port < 1024:
        service["sysctls"] = {"net.ipv4.ip_unprivileged_port_start": "0"}
    return service


def _limits(inputs: StackInputs) -> dict[str, object]:
    return {"limits": {"cpus": inputs.cpus, "memory": inputs.memory}}


def health_command(path: str) -> list[str]:
    url = f"http://127.0.0.1:8080{path}"
    return ["CMD-SHELL", f"curl -fsS -o /dev/null {url} || wget -q -O /dev/null {url}"]


def migrate_service(inputs: StackInputs) -> dict[str, object]:
    service = _app(
        inputs, "migrate", {"SKIP_MIGRATIONS": "false", "DURANGO_DEPLOY": inputs.deploy_id}
    )
    service["healthcheck"] = {"disable": True}
    service["deploy"] = {
        "mode": "replicated-job",
        "replicas": 1,
        "restart_policy": {"condition": "none"},
        "resources": _limits(inputs),
    }
    return service


def app_service(inputs: StackInputs) -> dict[str, object]:
    service = _app(inputs, "", {"SKIP_MIGRATIONS": "true"})
    service["healthcheck"] = {
        "test": health_command(inputs.health_path),
        "interval": "2s",
        "timeout": "3s",
        "retries": 3,
        "start_period": "90s",
    }
    service["deploy"] = {
        "mode": "replicated",
        "replicas": inputs.replicas,
        "endpoint_mode": "dnsrr",
        "update_config": {
            "parallelism": 1,
            "delay": "2s",
            "order": "start-first",
            "failure_action": "rollback",
            "monitor": "20s",
            "max_failure_ratio": 0,
        },
        "rollback_config": {"parallelism": 1, "order": "start-first", "monitor": "10s"},
        "restart_policy": {"condition": "any", "delay": "2s"},
        "resources": _limits(inputs),
    }
    return service


def scheduler_service(inputs: StackInputs) -> dict[str, object]:
    service = _app(inputs, "scheduler", {"SKIP_MIGRATIONS": "true"})
    pid = "/tmp/orangescrum-entrypoint/scheduler.pid"
    service["healthcheck"] = {
        "test": ["CMD-SHELL", f'kill -0 "$$(cat {pid})"'],
        "interval": "15s",
        "timeout": "5s",
        "retries": 3,
        "start_period": "60s",
    }
    service["deploy"] = {
        "mode": "replicated",
        "replicas": 1,
        "endpoint_mode": "dnsrr",
        "update_config": {"order": "stop-first", "failure_action": "rollback"},
        "restart_policy": {"condition": "any", "delay": "5s"},
        "resources": _limits(inputs),
    }
    return service


def proxy_service(inputs: StackInputs) -> dict[str, object]:
    return {
        "image": inputs.proxy_image,
        "environment": {"PROXY_CONFIG": PROXY_CONFIG},
        "configs": [{"source": "proxy_config", "target": PROXY_CONFIG, "mode": 0o444}],
        "ports": [{"target": 8080, "published": inputs.port, "protocol": "tcp", "mode": "host"}],
        "volumes": [{"type": "tmpfs", "target": "/run/haproxy", "tmpfs": {"size": MIB}}],
        # healthy once it has a release to send requests to: the deploy waits for that
        "healthcheck": {
            "test": ["CMD-SHELL", PROXY_HAS_SERVER],
            "interval": "2s",
            "timeout": "3s",
            "retries": 2,
            "start_period": "120s",
        },
        "read_only": True,
        "cap_drop": ["ALL"],
        "networks": ["default"],
        "stop_grace_period": "60s",
        "deploy": {
            "mode": "replicated",
            "replicas": 1,
            "endpoint_mode": "dnsrr",
            "placement": {"constraints": ["node.role == manager"]},
            # one task holds the host port: the old one must let go before the new one binds it
            "update_config": {"order": "stop-first", "failure_action": "rollback"},
            "restart_policy": {"condition": "any", "delay": "2s"},
        },
    }


def db_service(inputs: StackInputs) -> dict[str, object]:
    return {
        "image": inputs.db_image,
        "environment": {
            "POSTGRES_USER": _escape(inputs.db_user),
            "POSTGRES_DB": _escape(inputs.db_name),
            "POSTGRES_PASSWORD_FILE": "/run/secrets/db_password",
        },
        "secrets": [{"source": "db_password", "target": "db_password"}],
        "volumes": [{"type": "volume", "source": "db-data", "target": "/var/lib/postgresql/data"}],
        "healthcheck": {
            "test": ["CMD-SHELL", 'pg_isready -U "$$POSTGRES_USER" -d "$$POSTGRES_DB"'],
            "interval": "5s",
            "timeout": "5s",
            "retries": 20,
        },
        "networks": ["default"],
        "stop_signal": "SIGINT",  # PostgreSQL's fast shutdown: SIGTERM would wait for clients
        "stop_grace_period": "60s",
        "deploy": {
            "mode": "replicated",
            "replicas": 1,
            "endpoint_mode": "dnsrr",
            # its data is a volume on one node: it stays there (production: an external server)
            "placement": {"constraints": ["node.role == manager"]},
            "update_config": {"order": "stop-first"},
            "restart_policy": {"condition": "any", "delay": "5s"},
        },
    }


def volumes(inputs: StackInputs) -> dict[str, object]:
    """The shared ones on the driver every node reaches; logs, cache (and the database) local."""
    found: dict[str, object] = {}
    for name in SHARED:
        spec: dict[str, object] = {"driver": inputs.volume_driver}
        if inputs.volume_options:
            spec["driver_opts"] = {
                k: v.replace("{volume}", name) for k, v in sorted(inputs.volume_options.items())
            }
        found[name] = spec
    found.update({name: {} for name in LOCAL})
    if inputs.db_image:
        found["db-data"] = {}
    return found


def render(inputs: StackInputs, phase: str = "all") -> dict[str, object]:
    """The stack file as data; `phase="migrate"` holds only the migration job (and the
    database it needs), so that a first `docker stack deploy` runs it before the app changes."""
    services: dict[str, object] = {}
    if inputs.db_image:
        services[DB] = db_service(inputs)
    services[MIGRATE] = migrate_service(inputs)
    if phase == "all":
        services[APP] = app_service(inputs)
        services[SCHEDULER] = scheduler_service(inputs)
        services[PROXY] = proxy_service(inputs)
    stack: dict[str, object] = {
        "version": "3.9",
        "services": services,
        "networks": {"default": {"driver": "overlay", "attachable": False}},
        "volumes": volumes(inputs),
        "secrets": {name: {"external": True, "name": inputs.secrets[name]} for name in SECRETS},
    }
    if phase == "all":
        stack["configs"] = {"proxy_config": {"external": True, "name": inputs.proxy_config}}
    return stack
