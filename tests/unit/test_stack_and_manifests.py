"""The Swarm stack and the Kubernetes manifests rendered from the facts, without an engine: what
the stack must hold (replicas, start-first health-gated updates rolled back on failure, the
migration job, secrets, shared volumes), the YAML the CLI reads, the decisions that read the
swarm's answers, and the manifests checked by kubeconform against Kubernetes' own schemas."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.core.errors import DeployError
from tasks.deploy import swarm as swarm_deploy
from tasks.engine.swarm import SwarmService, SwarmTask
from tasks.formats import kube, stack, yaml_out
from tasks.formats.app_facts import Job
from tasks.formats.stack import StackInputs

SECRETS = {"db_password": "s_db_password_1", "security_salt": "s_security_salt_2"}


def inputs(**more: object) -> StackInputs:
    values: dict[str, object] = {
        "stack": "s",
        "image": "app:abc",
        "proxy_image": "proxy:def",
        "replicas": 3,
        "health_path": "/home/healthcheck",
        "port": 18080,
        "environment": {"DB_HOST": "orangescrum-db", "APP_URL": "http://x", "PRICE": "5$"},
        "secrets": SECRETS,
        "proxy_config": "s_proxy_3",
        "deploy_id": "2026-01-01T00:00:00+00:00",
        "db_image": "postgres:15",
        "db_user": "u",
        "db_name": "d",
        **more,
    }
    return StackInputs(**values)  # type: ignore[arg-type]


def services(made: dict[str, object]) -> dict[str, dict[str, object]]:
    found = made["services"]
    assert isinstance(found, dict)
    return found


def test_the_app_rolls_start_first_health_gated_and_back_on_failure() -> None:
    app = services(stack.render(inputs()))[stack.APP]
    deploy = app["deploy"]
    assert isinstance(deploy, dict)
    assert deploy["replicas"] == 3 and deploy["endpoint_mode"] == "dnsrr"
    assert deploy["update_config"]["order"] == "start-first"
    assert deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["rollback_config"]["order"] == "start-first"
    health = app["healthcheck"]
    assert isinstance(health, dict) and "/home/healthcheck" in health["test"][1]
    assert app["environment"]["SKIP_MIGRATIONS"] == "true"  # type: ignore[index]


def test_migrations_are_a_replicated_job_that_runs_again_on_every_deploy() -> None:
    first = services(stack.render(inputs(), "migrate"))
    assert set(first) == {stack.DB, stack.MIGRATE}  # the app is not touched by the first deploy
    job = first[stack.MIGRATE]
    assert job["deploy"]["mode"] == "replicated-job"  # type: ignore[index]
    assert job["deploy"]["restart_policy"] == {"condition": "none"}  # type: ignore[index]
    env = job["environment"]
    assert isinstance(env, dict) and env["APP_ROLE"] == "migrate"
    again = services(stack.render(inputs(deploy_id="later"), "migrate"))[stack.MIGRATE]
    assert again["environment"]["DURANGO_DEPLOY"] != env["DURANGO_DEPLOY"]  # type: ignore[index]


def test_the_password_and_the_salt_are_secrets_never_environment() -> None:
    made = stack.render(inputs())
    assert made["secrets"] == {
        "db_password": {"external": True, "name": "s_db_password_1"},
        "security_salt": {"external": True, "name": "s_security_salt_2"},
    }
    for name in (stack.APP, stack.MIGRATE, stack.SCHEDULER):
        service = services(made)[name]
        env = service["environment"]
        assert isinstance(env, dict)
        assert env["DB_PASSWORD_FILE"] == "/run/secrets/db_password"
        assert "DB_PASSWORD" not in env and "SECURITY_SALT" not in env
        assert "/run/secrets/security_salt" in " ".join(service["entrypoint"])  # type: ignore[arg-type]
    assert services(made)[stack.APP]["environment"]["PRICE"] == "5$$"  # type: ignore[index]


def test_shared_volumes_are_on_the_named_driver_and_the_rest_local() -> None:
    options = {"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/exports/os/{volume}"}
    volumes = stack.render(inputs(volume_driver="local", volume_options=options))["volumes"]
    assert isinstance(volumes, dict)
    assert volumes["app-uploads"] == {
        "driver": "local",
        "driver_opts": {
            "device": ":/exports/os/app-uploads",
            "o": "addr=10.0.0.5,rw",
            "type": "nfs",
        },
    }
    assert volumes["app-logs"] == {} and volumes["db-data"] == {}
    external = stack.render(inputs(db_image=""))
    assert stack.DB not in services(external) and "db-data" not in external["volumes"]  # type: ignore[operator]


def test_the_proxy_publishes_on_its_node_and_waits_for_a_server() -> None:
    proxy = services(stack.render(inputs()))[stack.PROXY]
    assert proxy["ports"] == [
        {"target": 8080, "published": 18080, "protocol": "tcp", "mode": "host"}
    ]
    assert proxy["deploy"]["update_config"]["order"] == "stop-first"  # type: ignore[index]
    assert "UP" in proxy["healthcheck"]["test"][1]  # type: ignore[index]


def test_the_stack_file_is_yaml_the_cli_reads_back_as_rendered() -> None:
    yaml = pytest.importorskip("yaml")
    made = stack.render(inputs(loopback_port=80))
    assert yaml.safe_load(yaml_out.dump(made)) == made
    app = services(made)[stack.APP]
    assert app["sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "0"}


# --- reading the swarm's answers ------------------------------------------------------------


class FakeSwarm:
    def __init__(self, role: str = "manager") -> None:
        self._role = role
        self.services: dict[str, SwarmService] = {}
        self.task_list: dict[str, list[SwarmTask]] = {}

    def address(self) -> str:
        return "unix:///fake.sock"

    def role(self) -> str:
        return self._role

    def service(self, name: str) -> SwarmService | None:
        return self.services.get(name)

    def tasks(self, service: str) -> list[SwarmTask]:
        return self.task_list.get(service, [])


def task(
    state: str, iteration: int = 0, image: str = "app:new", desired: str = "running"
) -> SwarmTask:
    return SwarmTask("t", "svc", "n1", "id1", state, desired, "", "exit 1", iteration, image, 1)


@pytest.mark.parametrize(
    ("role", "says"),
    [("inactive", "is in no swarm"), ("worker", "is a swarm worker"), ("pending", "swarm pending")],
)
def test_a_target_that_is_not_a_manager_is_refused_in_one_line(role: str, says: str) -> None:
    with pytest.raises(DeployError) as refused:
        swarm_deploy.check_manager(FakeSwarm(role))  # type: ignore[arg-type]
    assert says in str(refused.value) and "nothing changed" in str(refused.value)
    assert "\n" not in str(refused.value)
    swarm_deploy.check_manager(FakeSwarm("manager"))  # type: ignore[arg-type]


def test_a_job_counts_only_its_new_run() -> None:
    fake = FakeSwarm()
    fake.services["job"] = SwarmService("job", "app:new", 1, "", "", 3)
    fake.task_list["job"] = [task("complete", 2)]
    assert swarm_deploy.job_outcome(fake, "job", after=3) is None  # type: ignore[arg-type]
    assert swarm_deploy.job_outcome(fake, "job", after=2) is None  # type: ignore[arg-type]
    fake.task_list["job"].append(task("running", 3, desired="complete"))
    assert swarm_deploy.job_outcome(fake, "job", after=2) is None  # type: ignore[arg-type]
    fake.task_list["job"][-1] = task("failed", 3, desired="complete")
    assert swarm_deploy.job_outcome(fake, "job", after=2) == "failed: exit 1"  # type: ignore[arg-type]
    fake.task_list["job"][-1] = task("complete", 3, desired="complete")
    assert swarm_deploy.job_outcome(fake, "job", after=2) == "complete"  # type: ignore[arg-type]


def test_an_update_converges_only_with_every_replica_on_the_new_image() -> None:
    fake = FakeSwarm()
    fake.services["app"] = SwarmService("app", "app:new", 2, "updating", "", -1)
    fake.task_list["app"] = [task("running"), task("running", image="app:old")]
    assert swarm_deploy.update_outcome(fake, "app", "app:new", 2) is None  # type: ignore[arg-type]
    fake.services["app"] = SwarmService("app", "app:new", 2, "completed", "", -1)
    assert swarm_deploy.update_outcome(fake, "app", "app:new", 2) is None  # type: ignore[arg-type]
    fake.task_list["app"] = [task("running"), task("running")]
    assert swarm_deploy.update_outcome(fake, "app", "app:new", 2) == "converged"  # type: ignore[arg-type]
    fake.services["app"] = SwarmService("app", "app:old", 2, "rollback_completed", "unhealthy", -1)
    outcome = swarm_deploy.update_outcome(fake, "app", "app:new", 2)  # type: ignore[arg-type]
    assert outcome == "rolled back: unhealthy"


def test_secrets_are_named_by_their_content() -> None:
    one = swarm_deploy.named("s", "db_password", b"a")
    assert one == swarm_deploy.named("s", "db_password", b"a")
    assert one != swarm_deploy.named("s", "db_password", b"b") and one.startswith("s_db_password_")


# --- Kubernetes -----------------------------------------------------------------------------

JOBS = (
    Job("queue-worker", "* * * * *", "queue worker", 58),
    Job("recurring-task", "*/30 * * * *", "recurring_task", 0),
)


def manifests(**more: object) -> dict[str, list[dict[str, object]]]:
    values: dict[str, object] = {
        "name": "OrangeScrum_EE",
        "key": "0123456789ab",
        "image": "registry.example.com/orangescrum-ee:0123456789ab",
        "replicas": 3,
        "health_path": "/users/login",
        "environment": {"DB_HOST": "db.example.com", "DB_NAME": "orangescrum"},
        "jobs": JOBS,
        "storage_class": "nfs-client",
        "loopback_port": 80,
        **more,
    }
    return kube.render(kube.KubeInputs(**values))  # type: ignore[arg-type]


def by_kind(docs: list[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [d for d in docs if d["kind"] == kind]


def test_the_migration_job_comes_first_once_per_release_as_a_pre_upgrade_hook() -> None:
    files = manifests()
    assert list(files) == ["01-migrate.yaml", "02-app.yaml"]
    (job,) = files["01-migrate.yaml"]
    meta = job["metadata"]
    assert isinstance(meta, dict) and meta["name"] == "orangescrum-ee-migrate-0123456789ab"
    assert meta["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert {"name": "APP_ROLE", "value": "migrate"} in container["env"]
    assert job["spec"]["backoffLimit"] == 0  # type: ignore[index]


def test_the_app_rolls_with_no_pod_missing_and_reads_its_secrets_from_a_secret() -> None:
    app = manifests()["02-app.yaml"]
    (deployment,) = by_kind(app, "Deployment")
    spec = deployment["spec"]
    assert isinstance(spec, dict) and spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    container = spec["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/users/login"
    salt = next(e for e in container["env"] if e["name"] == "SECURITY_SALT")
    assert salt["valueFrom"]["secretKeyRef"] == {
        "name": "orangescrum-ee-secrets",
        "key": "security-salt",
    }
    text = yaml_out.dump_all(app)
    assert 'DB_PASSWORD"' not in text and "change-me" not in text
    (claim,) = by_kind(app, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # type: ignore[index]
    assert claim["spec"]["storageClassName"] == "nfs-client"  # type: ignore[index]
    crons = by_kind(app, "CronJob")
    assert [c["spec"]["schedule"] for c in crons] == ["* * * * *", "*/30 * * * *"]  # type: ignore[index]
    assert all(c["spec"]["concurrencyPolicy"] == "Forbid" for c in crons)  # type: ignore[index]


def schema_location() -> str | None:
    cache = Path(os.environ.get("KUBE_SCHEMA_CACHE", Path.home() / ".cache" / "kube-schemas"))
    if not (cache / "v1.30.0-standalone-strict" / "deployment-apps-v1.json").is_file():
        return None
    folder = "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
    return f"{cache}/{folder}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json"


def test_the_manifests_are_valid_kubernetes(tmp_path: Path) -> None:
    """kubeconform, strict, against Kubernetes 1.30's schemas prepared offline by
    scripts/kube-schemas.sh (a missing tool is a skip here, a failure under CI=true)."""
    location = schema_location()
    if shutil.which("kubeconform") is None or location is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "CI=true but kubeconform or its schemas are missing: run scripts/kube-schemas.sh"
            )
        pytest.skip("kubeconform or its schemas are missing: run scripts/kube-schemas.sh")
    for variant, made in (
        ("full", manifests()),
        ("bare", manifests(storage_class="", jobs=(), loopback_port=0)),
    ):
        for name, documents in made.items():
            (tmp_path / f"{variant}-{name}").write_text(yaml_out.dump_all(documents))
    done = subprocess.run(
        ["kubeconform", "-strict", "-summary", "-kubernetes-version", "1.30.0",
         "-schema-location", location, *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Invalid: 0, Errors: 0" in done.stdout and "Skipped: 0" in done.stdout, done.stdout
