"""Kubernetes manifests of a release, rendered from the same facts and settings as the Swarm stack
(docs/KUBERNETES.md). They are validated against Kubernetes' schemas (kubeconform) but not run
here: there is no cluster on this machine.

Two files, applied in order:
  01-migrate.yaml  the release's migrations: a Job named after the release's key (a Job is
                   immutable, each release gets its own), annotated as a Helm pre-install /
                   pre-upgrade hook so that the same file works as a chart template;
  02-app.yaml      ConfigMap (the app's environment, no secrets), the shared claim (uploads,
                   the app's written files, sessions: ReadWriteMany), the app's Deployment
                   (rolling, maxUnavailable 0, readiness on the health path, a preStop pause
                   so endpoints drop a pod before it stops), its Service and disruption budget,
                   and one CronJob per job of the facts (concurrencyPolicy Forbid, as the
                   scheduler runs them one at a time).
The database password and the salt come from a Secret the operator creates (its name in the
manifests): they are never written into a manifest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tasks.formats.app_facts import Job

SHARED = {"uploads": "/data/uploads", "files": "/data/files", "sessions": "/data/sessions"}
SCRATCH = {"logs": "/data/logs", "cache": "/data/cache", "tmp": "/tmp", "data-tmp": "/data/tmp"}
PASSWORD_KEY, SALT_KEY = "db-password", "security-salt"


@dataclass(frozen=True)
class KubeInputs:
    name: str  # the project: every object's name starts with it
    key: str  # the release's image key
    image: str
    replicas: int
    health_path: str
    environment: Mapping[str, str]  # the app's, secrets left out
    jobs: Sequence[Job] = ()
    storage_class: str = ""
    storage: str = "20Gi"
    loopback_port: int = 0
    cpus: str = "2"
    memory: str = "2Gi"
    annotations: Mapping[str, str] = field(default_factory=dict)


def dns_name(text: str, limit: int = 63) -> str:
    """A DNS-1123 label: lower case, digits and dashes, at most `limit` characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:limit].rstrip("-") or "app"


def _labels(inputs: KubeInputs, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": dns_name(inputs.name),
        "app.kubernetes.io/component": component,
    }


def _meta(inputs: KubeInputs, name: str, component: str) -> dict[str, object]:
    labels = {**_labels(inputs, component), "app.kubernetes.io/version": inputs.key}
    return {"name": name, "labels": labels}


def secret_name(inputs: KubeInputs) -> str:
    return f"{dns_name(inputs.name, 52)}-secrets"


def _container(inputs: KubeInputs, role: str, extra: Mapping[str, str]) -> dict[str, object]:
    values = {"DB_PASSWORD_FILE": "/run/secrets/db_password", **extra}
    env: list[dict[str, object]] = [{"name": k, "value": v} for k, v in values.items()]
    if role:
        env.append({"name": "APP_ROLE", "value": role})
    env.append(
        {
            "name": "SECURITY_SALT",
            "valueFrom": {"secretKeyRef": {"name": secret_name(inputs), "key": SALT_KEY}},
        }
    )
    mounts: list[dict[str, object]] = [
        {"name": "shared", "mountPath": path, "subPath": sub} for sub, path in SHARED.items()
    ]
    mounts += [{"name": name, "mountPath": path} for name, path in SCRATCH.items()]
    mounts.append({"name": "secrets", "mountPath": "/run/secrets", "readOnly": True})
    return {
        "name": "app",
        "image": inputs.image,
        "imagePullPolicy": "IfNotPresent",
        "envFrom": [{"configMapRef": {"name": f"{dns_name(inputs.name, 52)}-env"}}],
        "env": env,
        "volumeMounts": mounts,
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": inputs.cpus, "memory": inputs.memory},
        },
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _pod(
    inputs: KubeInputs, containers: list[dict[str, object]], restart: str
) -> dict[str, object]:
    claim = {"claimName": f"{dns_name(inputs.name, 52)}-shared"}
    secret = {
        "secretName": secret_name(inputs),
        "defaultMode": 0o440,
        "items": [{"key": PASSWORD_KEY, "path": "db_password"}],
    }
    volumes: list[dict[str, object]] = [
        {"name": "shared", "persistentVolumeClaim": claim},
        {"name": "secrets", "secret": secret},
    ]
    volumes += [
        {"name": name, "emptyDir": {"medium": "Memory"} if "tmp" in name else {}}
        for name in SCRATCH
    ]
    context: dict[str, object] = {
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "runAsNonRoot": True,
    }
    if 0 < inputs.loopback_port < 1024:
        context["sysctls"] = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
    return {
        "securityContext": context,
        "restartPolicy": restart,
        "containers": containers,
        "volumes": volumes,
    }


def config_map(inputs: KubeInputs) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(inputs, f"{dns_name(inputs.name, 52)}-env", "app"),
        "data": {k: v for k, v in sorted(inputs.environment.items())},
    }


def shared_claim(inputs: KubeInputs) -> dict[str, object]:
    spec: dict[str, object] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": inputs.storage}},
    }
    if inputs.storage_class:
        spec["storageClassName"] = inputs.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(inputs, f"{dns_name(inputs.name, 52)}-shared", "storage"),
        "spec": spec,
    }


def migrate_job(inputs: KubeInputs) -> dict[str, object]:
    meta = _meta(inputs, f"{dns_name(inputs.name, 40)}-migrate-{inputs.key}", "migrate")
    meta["annotations"] = {
        "helm.sh/hook": "pre-install,pre-upgrade",
        "helm.sh/hook-weight": "0",
        "helm.sh/hook-delete-policy": "before-hook-creation",
        **inputs.annotations,
    }
    container = _container(inputs, "migrate", {"SKIP_MIGRATIONS": "false"})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,  # a failed migration is read, not retried blindly
            "activeDeadlineSeconds": 7200,
            "ttlSecondsAfterFinished": 7 * 86400,
            "template": {
                "metadata": {"labels": _labels(inputs, "migrate")},
                "spec": _pod(inputs, [container], "Never"),
            },
        },
    }


def app_deployment(inputs: KubeInputs) -> dict[str, object]:
    container = _container(inputs, "", {"SKIP_MIGRATIONS": "true"})
    probe = {"httpGet": {"path": inputs.health_path, "port": 8080}, "timeoutSeconds": 3}
    container.update(
        {
            "ports": [{"name": "http", "containerPort": 8080}],
            "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 60},
            "readinessProbe": {**probe, "periodSeconds": 2, "failureThreshold": 2},
            "livenessProbe": {**probe, "periodSeconds": 15, "failureThreshold": 3},
            # endpoints drop the pod before it is told to stop: no request meets a closed port
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        }
    )
    pod = _pod(inputs, [container], "Always")
    pod["terminationGracePeriodSeconds"] = 40
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(inputs, f"{dns_name(inputs.name, 52)}-app", "app"),
        "spec": {
            "replicas": inputs.replicas,
            "selector": {"matchLabels": _labels(inputs, "app")},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "minReadySeconds": 5,
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {
                    "labels": {**_labels(inputs, "app"), "app.kubernetes.io/version": inputs.key}
                },
                "spec": pod,
            },
        },
    }


def service(inputs: KubeInputs) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(inputs, dns_name(inputs.name), "app"),
        "spec": {
            "selector": _labels(inputs, "app"),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def disruption_budget(inputs: KubeInputs) -> dict[str, object]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(inputs, f"{dns_name(inputs.name, 52)}-app", "app"),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": _labels(inputs, "app")}},
    }


def cron_job(inputs: KubeInputs, job: Job) -> dict[str, object]:
    container = _container(inputs, "job", {"SKIP_MIGRATIONS": "true", "APP_JOB": job.name})
    spec: dict[str, object] = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": _labels(inputs, "job")},
            "spec": _pod(inputs, [container], "Never"),
        },
    }
    if job.timeout:
        spec["activeDeadlineSeconds"] = job.timeout
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta(
            inputs, f"{dns_name(inputs.name, 30)}-job-{dns_name(job.name, 20)}", "job"
        ),
        "spec": {
            "schedule": job.schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 120,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": spec},
        },
    }


def render(inputs: KubeInputs) -> dict[str, list[dict[str, object]]]:
    """File name -> its documents, in the order they are applied."""
    app = [
        config_map(inputs),
        shared_claim(inputs),
        app_deployment(inputs),
        service(inputs),
        disruption_budget(inputs),
        *(cron_job(inputs, job) for job in inputs.jobs),
    ]
    return {"01-migrate.yaml": [migrate_job(inputs)], "02-app.yaml": app}
