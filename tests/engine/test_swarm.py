"""`doit swarm-deploy`: the release as a Docker Swarm stack, against real engines.

The swarms are throw-away dockerds, each in its own network namespace with its own data root
(the images copied in from the test engine), never the test engine itself: Docker 20.10 wipes
the DNS records of every container on the engine when it leaves a swarm (containers that run
across a `docker swarm leave` no longer resolve each other by name), which would break whatever
else runs on a shared engine. The build runs on the test engine; `swarm_host` points the stack
deploy at the swarm's manager (build here, deploy there).

  - single node: a manager made for the test and left after it (and checked to be usable: no
    docker_gwbridge or ingress left, a container with a published port answers). A deploy to it
    before it is a manager changes nothing; the first deploy starts the stack; an update serves
    every request; a release whose migration fails never reaches the app.
  - two nodes: a manager and a worker, linked by a veth pair; the shared volumes are a bind of
    one host folder on both (the stand-in for NFS: this machine's kernel has none). Draining
    node 2 moves its replica with no failed request; killing node 2 (dockerd, containerd and
    every container of it) lets the service converge on node 1, and every row and file written
    before is still there.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
from helpers import (
    POSTGRES,
    REPO,
    Run,
    Workspace,
    demo_app_repo,
    free_port,
    git,
    make_local_project,
    remove_images,
)
from swarm_lab import MAIN, LabError, Node, copy_images, run, wait_until

DB = {"user": "orangescrum_test", "password": "test-only-3f9a1c", "name": "orangescrum_test"}
PATHS = ("/", "/home/healthcheck")
HOST_SIDE, MANAGER_SIDE = "172.31.247.1", "172.31.247.2"  # the test reaches the manager here
MANAGER_LINK, WORKER_LINK = "172.31.246.1", "172.31.246.2"  # the nodes reach each other here


# --- throw-away swarm nodes ---------------------------------------------------------------------


@dataclass
class Private:
    """A dockerd in its own network namespace, data root, exec root and cgroup parent."""

    name: str
    root: Path
    netns: str
    cgroup: str
    node: Node
    daemon: subprocess.Popen[bytes] | None = None

    def pids(self) -> list[int]:
        """Its dockerd, containerd and shims (the netns) and its containers (the cgroup)."""
        found = {
            int(p) for p in run(["ip", "netns", "pids", self.netns], check=False).stdout.split()
        }
        for procs in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup}/**/cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                found.update(int(line) for line in procs.read_text().split())
        return sorted(found)

    def kill(self) -> None:
        """Everything of the node, at once: what a lost machine looks like."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.daemon is not None:
            self.daemon.wait(timeout=30)
        wait_until(lambda: not self.pids(), 30, f"every process of {self.name} gone")


def start_node(private: Private, bridge: str, bridge_cidr: str) -> None:
    ns = ["ip", "netns", "exec", private.netns]
    run([*ns, "ip", "link", "add", bridge, "type", "bridge"])
    run([*ns, "ip", "addr", "add", bridge_cidr, "dev", bridge])
    run([*ns, "ip", "link", "set", bridge, "up"])
    run([*ns, "ip", "link", "set", "lo", "up"])
    (private.root / "daemon.json").write_text("{}\n")
    log = (private.root / "dockerd.log").open("wb")
    private.daemon = subprocess.Popen(
        [
            "nsenter", f"--net=/run/netns/{private.netns}", "dockerd",
            "--config-file", str(private.root / "daemon.json"), "-H", private.node.host,
            "--data-root", str(private.root / "data"), "--exec-root", str(private.root / "x"),
            "--pidfile", str(private.root / "pid"), "--bridge", bridge,
            "--cgroup-parent", f"/{private.cgroup}",
            "--containerd-namespace", private.netns,
            "--containerd-plugins-namespace", f"{private.netns}-p",
        ],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}, start_new_session=True,
    )  # fmt: skip
    log.close()

    def ready() -> bool:
        if private.daemon is not None and private.daemon.poll() is not None:
            tail = (private.root / "dockerd.log").read_text(errors="replace").splitlines()[-1:]
            raise LabError(f"{private.name} dockerd exited: {tail}")
        return bool(private.node.docker("version", "--format", "{{.Server.Version}}").stdout)

    wait_until(ready, 60, f"{private.name} dockerd answering")


def stop_node(private: Private) -> list[str]:
    """Leave, stop, kill what is left, unmount, remove: every step runs."""
    problems = []
    if private.daemon is not None and private.daemon.poll() is None:
        private.node.docker("swarm", "leave", "--force", check=False, timeout=90)
        private.daemon.send_signal(signal.SIGTERM)
        try:
            private.daemon.wait(timeout=40)
        except subprocess.TimeoutExpired:
            problems.append(f"{private.name} dockerd ignored SIGTERM")
    try:
        private.kill()
    except LabError as exc:
        problems.append(str(exc))
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(str(private.root))
    ]
    for point in sorted(mounts, key=len, reverse=True):
        run(["umount", "-l", point], check=False)
    run(["ip", "netns", "del", private.netns], check=False)
    for tree in Path("/sys/fs/cgroup").glob(f"*/{private.cgroup}"):
        for sub in sorted(tree.glob("**/"), key=lambda p: len(str(p)), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
    shutil.rmtree(private.root, ignore_errors=True)
    return problems


@contextlib.contextmanager
def private_swarm(images: list[str], workers: int) -> Iterator[list[Private]]:
    """A manager (and `workers` workers, 0 or 1) in network namespaces, the images copied in,
    the swarm initialised and joined; all of it removed afterwards, whatever happened."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("nsenter") is None:
        pytest.fail("a throw-away swarm needs root, dockerd and nsenter", pytrace=False)
    used = run(["ip", "-4", "-o", "addr", "show"]).stdout
    if "172.31.247." in used or "172.31.246." in used:
        pytest.fail("172.31.246.0/24 or 172.31.247.0/24 is in use on this machine", pytrace=False)
    tag = "dz" + hashlib.sha256(uuid.uuid4().bytes).hexdigest()[:5]
    base = Path("/tmp") / tag  # short: unix socket paths have a length limit
    nodes = [
        Private(f"{tag}-{i}", base / str(i), f"{tag}-{i}", f"{tag}-{i}",
                Node(f"node{i + 1}", f"unix://{base}/{i}.sock", ""))
        for i in range(1 + workers)
    ]  # fmt: skip
    problems: list[str] = []
    try:
        for private in nodes:
            private.root.mkdir(parents=True)
            run(["ip", "netns", "add", private.netns])
        manager = nodes[0]
        # the test engine's side reaches the manager (its published port) over a veth pair
        run(["ip", "link", "add", f"{tag}h", "type", "veth", "peer", "name", f"{tag}m"])
        run(["ip", "link", "set", f"{tag}m", "netns", manager.netns])
        run(["ip", "addr", "add", f"{HOST_SIDE}/24", "dev", f"{tag}h"])
        run(["ip", "link", "set", f"{tag}h", "up"])
        in_manager = ["ip", "netns", "exec", manager.netns]
        run([*in_manager, "ip", "addr", "add", f"{MANAGER_SIDE}/24", "dev", f"{tag}m"])
        run([*in_manager, "ip", "link", "set", f"{tag}m", "up"])
        for number, worker in enumerate(nodes[1:], 1):  # manager <-> worker, a veth pair
            pair = (f"{tag}a{number}", f"{tag}b{number}")
            run(["ip", "link", "add", pair[0], "type", "veth", "peer", "name", pair[1]])
            run(["ip", "link", "set", pair[0], "netns", manager.netns])
            run(["ip", "link", "set", pair[1], "netns", worker.netns])
            run([*in_manager, "ip", "addr", "add", f"{MANAGER_LINK}/24", "dev", pair[0]])
            run([*in_manager, "ip", "link", "set", pair[0], "up"])
            in_worker = ["ip", "netns", "exec", worker.netns]
            run([*in_worker, "ip", "addr", "add", f"{WORKER_LINK}/24", "dev", pair[1]])
            run([*in_worker, "ip", "link", "set", pair[1], "up"])
        for number, private in enumerate(nodes):
            start_node(private, f"{tag}x{number}", f"172.31.{245 - number}.1/24")
            copy_images(MAIN, private.node, images)
        advertise = MANAGER_LINK if workers else MANAGER_SIDE
        manager.node.docker("swarm", "init", "--advertise-addr", advertise)
        if workers:
            token = manager.node.docker("swarm", "join-token", "-q", "worker").stdout.strip()
            for worker in nodes[1:]:
                worker.node.docker(
                    "swarm", "join", "--advertise-addr", WORKER_LINK, "--token", token,
                    f"{MANAGER_LINK}:2377", timeout=90,
                )  # fmt: skip
        yield nodes
    finally:
        for private in reversed(nodes):
            problems += stop_node(private)
        run(["ip", "link", "del", f"{tag}h"], check=False)
        shutil.rmtree(base, ignore_errors=True)
    if problems:
        raise LabError("throw-away swarm teardown: " + "; ".join(problems))


# --- load, project ------------------------------------------------------------------------------


class Load:
    """4 keep-alive clients asking PATHS in turn; statuses and connection errors counted."""

    def __init__(self, address: str, port: int) -> None:
        self.address, self.port = address, port
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(4)]

    def client(self) -> None:
        conn = http.client.HTTPConnection(self.address, self.port, timeout=30)
        n = 0
        while not self.stop.is_set():
            path = PATHS[n % 2]
            n += 1
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                self.statuses[response.status] += 1
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {path}: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection(self.address, self.port, timeout=30)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def clean(self) -> bool:
        return set(self.statuses) == {200} and not self.errors

    def summary(self) -> str:
        return f"{dict(self.statuses)}, {len(self.errors)} connection errors {self.errors[:5]}"


class Writer(threading.Thread):
    """Inserts rows through the app until stopped; remembers each one it saw committed."""

    def __init__(self, address: str, port: int) -> None:
        super().__init__(daemon=True)
        self.address, self.port = address, port
        self.stop = threading.Event()
        self.committed: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            name = f"writer-{n}"
            n += 1
            try:
                conn = http.client.HTTPConnection(self.address, self.port, timeout=10)
                conn.request(
                    "POST", "/api/actions", body=f"name={name}",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )  # fmt: skip
                if conn.getresponse().status == 201:
                    self.committed.append(name)
                conn.close()
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)


@dataclass
class StackProject:
    ws: Workspace
    stack: str
    port: int
    settings: list[str] = field(default_factory=list)

    def doit(self, *args: str, host: str = "", check: bool = True) -> Run:
        return self.ws.doit(*args, *self.settings, f"swarm_host={host}", check=check)

    def get(self, path: str = "/") -> tuple[int, str]:
        conn = http.client.HTTPConnection(MANAGER_SIDE, self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def version(self, text: str) -> None:
        self.ws.app.write("VERSION", text + "\n")
        self.ws.app.commit(f"version {text}")

    def images(self) -> list[str]:
        """The runtime and proxy images by their key tags (what the stack names)."""
        found = subprocess.run(
            ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        mine = [i for i in found if i.startswith(self.ws.prefix) and not i.endswith(":latest")]
        return [i for i in mine if "-runtime:" in i or "-proxy:" in i]


def make_project(tmp: Path, engine: docker.DockerClient, extra: str = "") -> StackProject:
    for image in ("debian", "postgres"):
        subprocess.run([str(REPO / "scripts" / "make-local-images.sh"), image], check=True)
    app = demo_app_repo(tmp / "demo-app")
    prefix = f"durango-test-swarm-{uuid.uuid4().hex[:8]}"
    config = f'proxy_image = "{prefix}-proxy"\nhealth_timeout = 90\nreplicas = 2\n{extra}'
    root = make_local_project(tmp / "project", app.path, prefix, extra_config=config)
    port = free_port()
    (root / "orangescrum-ee" / "swarm.env").write_text(
        "DB_HOST=orangescrum-db\n"
        f"DB_IMAGE={POSTGRES}\n"
        f"APP_PORT={port}\nAPP_URL=http://localhost:{port}\n"
        f"DB_NAME={DB['name']}\nDB_USERNAME={DB['user']}\nDB_PASSWORD={DB['password']}\n"
        "SECURITY_SALT=test-only-salt-0123456789abcdef0123456789abcdef\n"
        "APP_CPUS=1\nAPP_MEMORY=1g\n"
    )
    settings = ["env_file=orangescrum-ee/swarm.env", f"swarm_stack={prefix}"]
    made = StackProject(Workspace(root, prefix, app, engine), prefix, port, settings)
    made.ws.doit("runtime", *settings)
    made.ws.doit("proxy", *settings)
    return made


def last_line(run_: Run) -> str:
    lines = [line for line in run_.out.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def running_tasks(node: Node, service: str) -> dict[str, str]:
    """task ID -> node ID of the service's running tasks (asked of the manager; the nodes share
    this machine's hostname, so only their IDs tell them apart)."""
    ids = node.docker("service", "ps", service, "-q", "--filter", "desired-state=running").stdout
    if not ids.split():
        return {}
    out = node.docker(
        "inspect", "--format", "{{.ID}} {{.NodeID}} {{.Status.State}}", *ids.split()
    ).stdout
    return {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()
        if line.split()[2:3] == ["running"]
    }


def placement(
    node: Node, service: str, count: int, avoid: str = "", need: str = ""
) -> Callable[[], dict[str, str] | None]:
    """A probe for wait_until: the running tasks once there are `count`, none on node `avoid`
    and one on node `need`; else None."""

    def probe() -> dict[str, str] | None:
        tasks = running_tasks(node, service)
        where = set(tasks.values())
        if len(tasks) != count or avoid in where or (need and need not in where):
            return None
        return tasks

    return probe


def image_of(node: Node, service: str) -> str:
    spec = "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
    return node.docker("service", "inspect", service, "--format", spec).stdout.strip()


def usable_after_leaving(node: Node) -> None:
    """What the engine must still do once it left the swarm: no swarm network left, a
    container with a published port answers."""
    node.docker("swarm", "leave", "--force")
    networks = node.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    if "docker_gwbridge" in networks:  # a gateway bridge outlives the swarm: ours to remove
        node.docker("network", "rm", "docker_gwbridge")
        networks.remove("docker_gwbridge")
    assert "ingress" not in networks and node.swarm_state() == "inactive", networks
    node.docker(
        "run", "-d", "--name", "after", "-p", "8099:80", "durango-local/busybox",
        "sh", "-c", "echo after > /i.html && exec httpd -f -p 80 -h /",
    )  # fmt: skip

    def answer() -> str | None:
        try:
            conn = http.client.HTTPConnection(MANAGER_SIDE, 8099, timeout=5)
            conn.request("GET", "/i.html")
            return conn.getresponse().read().decode().strip()
        except OSError:
            return None

    assert wait_until(answer, 30, "a published port after the swarm") == "after"


@pytest.fixture
def single(tmp_path: Path, engine: docker.DockerClient) -> Iterator[StackProject]:
    made = make_project(tmp_path, engine)
    try:
        yield made
    finally:
        remove_images(engine, made.ws.prefix)


def test_a_single_node_swarm_deploys_updates_and_refuses_a_failing_migration(
    single: StackProject,
) -> None:
    with private_swarm([*single.images(), POSTGRES, "durango-local/busybox:latest"], 0) as nodes:
        manager = nodes[0].node
        manager.docker("swarm", "leave", "--force")  # not a manager yet: refused, nothing made
        refused = single.doit("swarm-deploy", host=manager.host, check=False)
        assert refused.code != 0
        line = last_line(refused)
        assert "is in no swarm, not a swarm manager" in line and "nothing changed" in line, line
        assert not manager.docker("secret", "ls", check=False).stdout.split()[1:]
        manager.docker("network", "rm", "docker_gwbridge", check=False)
        manager.docker("swarm", "init", "--advertise-addr", MANAGER_SIDE)

        started = time.monotonic()
        single.doit("swarm-deploy", host=manager.host)
        print(f"\nfirst stack deploy: {time.monotonic() - started:.1f}s")
        status, body = single.get("/")
        assert status == 200 and "demo-app 1.0.0" in body
        services = manager.docker("service", "ls", "--format", "{{.Name}} {{.Mode}}").stdout
        assert f"{single.stack}_orangescrum-migrate replicated job" in services, services
        secrets = manager.docker("secret", "ls", "--format", "{{.Name}}").stdout.split()
        assert any(s.startswith(f"{single.stack}_db_password_") for s in secrets), secrets
        app = f"{single.stack}_orangescrum-app"
        spec = manager.docker("service", "inspect", app, "--format", "{{json .Spec}}").stdout
        assert DB["password"] not in spec and "test-only-salt" not in spec

        single.version("2.0.0")
        single.ws.doit("runtime", *single.settings)
        copy_images(MAIN, manager, single.images())
        with Load(MANAGER_SIDE, single.port) as load:
            time.sleep(2)
            started = time.monotonic()
            single.doit("swarm-deploy", host=manager.host)
            print(f"rolling update: {time.monotonic() - started:.1f}s")
            time.sleep(2)
        print(f"load during the update: {load.summary()}")
        assert sum(load.statuses.values()) > 100 and load.clean(), load.summary()
        assert "demo-app 2.0.0" in single.get("/")[1]

        image = image_of(manager, app)
        single.ws.app.write("config/Migrations/20240301000000_Broken.sql", "SELECT 1/0;\n")
        single.ws.app.commit("a migration that fails")
        single.ws.doit("runtime", *single.settings)
        copy_images(MAIN, manager, single.images())
        broken = single.doit("swarm-deploy", host=manager.host, check=False)
        assert broken.code != 0
        line = last_line(broken)
        assert "migrations of" in line and "the app was not updated" in line, broken.out
        assert "docker service logs" in line
        assert image_of(manager, app) == image
        assert "demo-app 2.0.0" in single.get("/")[1]
        git(single.ws.app.path, "revert", "--no-edit", "HEAD")
        usable_after_leaving(manager)


@pytest.fixture
def pair(tmp_path: Path, engine: docker.DockerClient) -> Iterator[tuple[StackProject, Path]]:
    shared = tmp_path / "shared"  # one host folder both nodes bind: the stand-in for NFS
    for name in ("app-uploads", "app-files", "app-sessions"):
        (shared / name).mkdir(parents=True)
        os.chown(shared / name, 10001, 10001)
    options = f'swarm_volume_options = "type=none o=bind device={shared}/{{volume}}"\n'
    made = make_project(tmp_path, engine, options)
    try:
        yield made, shared
    finally:
        remove_images(engine, made.ws.prefix)


def test_two_nodes_drain_with_no_failed_request_and_survive_a_lost_node(
    pair: tuple[StackProject, Path],
) -> None:
    project, shared = pair
    with private_swarm([*project.images(), POSTGRES], 1) as nodes:
        manager, worker = nodes[0].node, nodes[1].node
        refused = project.doit("swarm-deploy", host=worker.host, check=False)
        line = last_line(refused)
        assert refused.code != 0 and "a swarm worker, not a swarm manager" in line, refused.out

        project.doit("swarm-deploy", host=manager.host)
        app = f"{project.stack}_orangescrum-app"
        worker_id = worker.node_id()
        placed = wait_until(placement(manager, app, 2), 120, "two app replicas running")
        assert worker_id in placed.values(), f"no replica on node 2: {placed}"
        assert project.get("/")[0] == 200

        # drain node 2: its replica moves to node 1, every request answered
        with Load(MANAGER_SIDE, project.port) as load:
            time.sleep(3)
            started = time.monotonic()
            manager.docker("node", "update", "--availability", "drain", worker_id)
            moved = wait_until(
                placement(manager, app, 2, avoid=worker_id), 180, "both replicas on node 1"
            )
            drained = time.monotonic() - started
            time.sleep(5)
        print(f"\ndrain: replicas {moved} after {drained:.1f}s; load {load.summary()}")
        assert sum(load.statuses.values()) > 100 and load.clean(), load.summary()

        # back on node 2, then lose node 2 while rows are written
        manager.docker("node", "update", "--availability", "active", worker_id)
        # the CLI waits for the forced update to converge: a node lost half-way through an
        # update leaves Swarm's updater waiting for a task on it
        manager.docker("service", "update", "--force", "--quiet", app, timeout=300)
        wait_until(placement(manager, app, 2, need=worker_id), 180, "a replica on node 2")
        on_worker = worker.service_containers(app)
        assert on_worker
        proof = f"written on node 2 {uuid.uuid4().hex}"
        worker.docker("exec", on_worker[0], "sh", "-c", f"echo '{proof}' > /data/uploads/proof")
        writer = Writer(MANAGER_SIDE, project.port)
        writer.start()
        time.sleep(3)
        started = time.monotonic()
        nodes[1].kill()
        down = wait_until(
            lambda: manager.docker("node", "inspect", worker_id, "--format", "{{.Status.State}}")
            .stdout.strip() == "down",
            120, "node 2 seen down",
        )  # fmt: skip
        seen_down = time.monotonic() - started
        converged = wait_until(
            placement(manager, app, 2, avoid=worker_id), 240, "two replicas on node 1"
        )
        took = time.monotonic() - started
        time.sleep(3)
        writer.stop.set()
        writer.join(timeout=60)
        print(
            f"kill: node 2 down after {seen_down:.1f}s, converged {converged} after {took:.1f}s; "
            f"{len(writer.committed)} rows written"
        )
        assert down and writer.committed, "no row was written through the app"
        db = manager.service_containers(f"{project.stack}_orangescrum-db")[0]
        names = set(
            manager.docker(
                "exec", db, "psql", "-U", DB["user"], "-d", DB["name"], "-XAtc",
                "SELECT name FROM actions",
            ).stdout.split()
        )  # fmt: skip
        lost = [name for name in writer.committed if name not in names]
        assert not lost, f"{len(lost)} committed rows lost: {lost[:5]}"
        assert (shared / "app-uploads" / "proof").read_text().strip() == proof
        on_manager = manager.service_containers(app)
        seen = manager.docker("exec", on_manager[0], "cat", "/data/uploads/proof").stdout
        assert seen.strip() == proof
