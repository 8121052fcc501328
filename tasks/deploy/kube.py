"""kube: the current build as Kubernetes manifests, on paper (docs/KUBERNETES.md): rendered from
the env file, the app's facts and the settings into `.durango/kube/<project>/`, never applied
(there is no cluster here). The migration Job comes first; the files say how to apply them.
"""

from __future__ import annotations

from tasks.build import app
from tasks.core.files import atomic_write_text
from tasks.core.pipeline import Pipeline, TaskDict, command_task
from tasks.deploy import bundle
from tasks.deploy.deploy import candidate
from tasks.deploy.swarm import NOT_ENVIRONMENT
from tasks.formats import kube, yaml_out


def inputs(pipe: Pipeline) -> kube.KubeInputs:
    release = candidate(pipe)
    env = bundle.env(pipe)
    facts = app.facts(pipe)
    memory = (env.get("APP_MEMORY") or "2g").upper().removesuffix("B")
    return kube.KubeInputs(
        name=pipe.settings.compose_project,
        key=release.key,
        image=release.image,
        replicas=pipe.settings.replicas,
        health_path=release.health_path,
        environment={k: v for k, v in env.values.items() if k not in NOT_ENVIRONMENT},
        jobs=facts.jobs,
        storage_class=pipe.settings.kube_storage_class,
        loopback_port=facts.loopback_port,
        cpus=env.get("APP_CPUS") or "2",
        memory=memory + "i" if memory[-1:] in "KMGT" else memory,
    )


def render(pipe: Pipeline) -> None:
    made = inputs(pipe)
    folder = pipe.settings.state_dir / "kube" / kube.dns_name(made.name)
    for name, documents in kube.render(made).items():
        atomic_write_text(folder / name, yaml_out.dump_all(documents))
    secret = kube.secret_name(made)
    job = f"{kube.dns_name(made.name, 40)}-migrate-{made.key}"
    print(f"kube: manifests of {made.key} in {folder} (validated by the tests, not applied here)")
    print(
        f"kube: apply with: kubectl create secret generic {secret} --from-file="
        f"{kube.PASSWORD_KEY}=<file> --from-file={kube.SALT_KEY}=<file> (once); "
        f"kubectl apply -f {folder / '01-migrate.yaml'} && kubectl wait --for=condition=complete "
        f"--timeout=2h job/{job} && kubectl apply -f {folder / '02-app.yaml'}"
    )


def task(pipe: Pipeline) -> TaskDict:
    doc = "render the current build as Kubernetes manifests (migration Job first); not applied"
    return command_task(pipe, doc, lambda: render(pipe), task_dep=["runtime"])
