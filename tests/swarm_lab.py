"""A Docker Swarm lab on one machine: the main engine as manager and, for two-node tests, a second
dockerd in a network namespace as worker (own data root, exec root, bridge, containerd and cgroup
parent), joined over a veth pair. Swarm cannot pull here, so images are copied into the worker.

Why these choices (found on the test machine, kernel without IPVS or NFS):
- the ingress routing mesh and service VIPs need IPVS, so lab services use `endpoint_mode: dnsrr`
  and `mode: host` ports (a proxy in front resolves `tasks.<service>`);
- the worker runs under `nsenter --net` (not `ip netns exec`, which remounts /sys and hides the
  cgroup mounts: dockerd then fails with "Devices cgroup isn't mounted");
- killing dockerd leaves its containers running (orphaned shims), so `kill_worker` also kills
  every process in the worker's cgroup parent: that is what a lost node looks like.

Every teardown step runs even when an earlier one or the test failed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import docker

T = TypeVar("T")
SWARM_LABEL = "com.docker.swarm.service.id"
DockerClient = docker.DockerClient  # Node.docker shadows the module inside the class


class LabError(AssertionError):
    """A lab step failed; the message is one line a reader can act on."""


def run(
    args: Sequence[str], timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; on failure raise one line with its stderr tail."""
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(args)}") from exc
    if check and done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise LabError(f"{' '.join(args)} exited {done.returncode}: {tail[0]}")
    return done


def wait_until(probe: Callable[[], T | None], timeout: float, what: str, every: float = 0.5) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except (LabError, docker.errors.DockerException, OSError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise LabError(f"{what}: not within {timeout:.0f}s (last: {last})")
        time.sleep(every)


@dataclass(frozen=True)
class Node:
    """One engine of the lab: `docker` runs the CLI against it, `client` gives the SDK."""

    name: str
    host: str  # a DOCKER_HOST value; "" is the main engine as the environment names it
    address: str  # the address this node advertises to the swarm

    def docker(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        prefix = ["docker", "-H", self.host] if self.host else ["docker"]
        return run([*prefix, *args], timeout=timeout, check=check)

    def client(self) -> DockerClient:
        return DockerClient(base_url=self.host) if self.host else docker.from_env()

    def swarm_state(self) -> str:
        return self.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()

    def node_id(self) -> str:
        return self.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()

    def service_containers(self, service: str, healthy: bool = False) -> list[str]:
        """Running containers of a swarm service on this node (optionally only healthy ones)."""
        args = ["ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"]
        if healthy:
            args += ["--filter", "health=healthy"]
        return self.docker(*args).stdout.split()


MAIN = Node("main", "", "127.0.0.1")


def copy_images(source: Node, target: Node, images: Sequence[str], timeout: float = 600) -> None:
    """Stream `docker save | docker load` (no image is held in memory)."""
    if not images:
        return
    save_cmd = ["docker", *(["-H", source.host] if source.host else []), "save", *images]
    load_cmd = ["docker", "-H", target.host, "load"]
    with subprocess.Popen(save_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as save:
        try:
            load = subprocess.run(
                load_cmd, stdin=save.stdout, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            save.kill()
            raise LabError(f"loading {', '.join(images)} into {target.name} timed out") from exc
        finally:
            if save.stdout:
                save.stdout.close()
        err = save.stderr.read().decode() if save.stderr else ""
        if save.wait(timeout=60) != 0:
            raise LabError(f"docker save {' '.join(images)} failed: {err.strip()[-300:]}")
    if load.returncode != 0:
        raise LabError(f"docker load into {target.name} failed: {load.stderr.strip()[-300:]}")


def leave_swarm(node: Node, volume_prefix: str = "") -> list[str]:
    """Remove the services of a swarm this lab made, leave it, and remove what leaving leaves
    behind (docker_gwbridge, volumes named with `volume_prefix`). Returns the problems seen."""
    problems: list[str] = []

    def step(what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except (LabError, OSError) as exc:
            problems.append(f"{what}: {exc}")

    if node.swarm_state() == "active":
        if node.docker("info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip() == "true":
            services = node.docker("service", "ls", "-q").stdout.split()
            if services:
                step("service rm", lambda: node.docker("service", "rm", *services))
            step(
                "service containers gone",
                lambda: wait_until(
                    lambda: (
                        not node.docker(
                            "ps", "-aq", "--filter", f"label={SWARM_LABEL}"
                        ).stdout.split()
                    ),
                    60,
                    f"containers of removed services on {node.name}",
                ),
            )
        step("swarm leave", lambda: node.docker("swarm", "leave", "--force", timeout=90))
    gw = node.docker("network", "ls", "-q", "--filter", "name=^docker_gwbridge$").stdout.split()
    if gw:  # a gateway bridge outlives the swarm; nothing else uses it once the swarm is gone
        step("docker_gwbridge", lambda: node.docker("network", "rm", "docker_gwbridge"))
    if volume_prefix:
        names = node.docker(
            "volume", "ls", "-q", "--filter", f"name={volume_prefix}"
        ).stdout.split()
        mine = [name for name in names if name.startswith(volume_prefix)]
        if mine:
            step("volume rm", lambda: node.docker("volume", "rm", *mine))
    return problems


@contextmanager
def single_node_swarm(volume_prefix: str, advertise: str = "127.0.0.1") -> Iterator[Node]:
    """The main engine as a one-node swarm for the length of the block; it must not be in a swarm
    already (another run may own it)."""
    state = MAIN.swarm_state()
    if state != "inactive":
        raise LabError(f"the main engine is already in a swarm (state {state}); leave it first")
    try:
        MAIN.docker("swarm", "init", "--advertise-addr", advertise)
        yield MAIN
    finally:
        problems = leave_swarm(MAIN, volume_prefix)
        if problems:
            raise LabError("single-node swarm teardown: " + "; ".join(problems))


@dataclass
class SwarmLab:
    """A manager (the main engine) and a worker (a dockerd in a network namespace)."""

    prefix: str
    root: Path
    manager: Node
    worker: Node
    netns: str
    cgroup_parent: str
    daemon: subprocess.Popen[bytes] | None = None
    problems: list[str] = field(default_factory=list)

    def node_id(self, node: Node) -> str:
        return node.node_id()

    def node_state(self, node_id: str) -> str:
        """What the manager thinks of a node: ready, down, unknown."""
        return self.manager.docker(
            "node", "inspect", node_id, "--format", "{{.Status.State}}"
        ).stdout.strip()

    def netns_pids(self) -> list[int]:
        found = run(["ip", "netns", "pids", self.netns], check=False).stdout.split()
        return [int(pid) for pid in found]

    def container_pids(self) -> list[int]:
        """Processes of the worker's containers, found by its cgroup parent (v1 and v2 trees)."""
        pids: set[int] = set()
        base = Path("/sys/fs/cgroup")
        for procs in [
            *base.glob(f"*/{self.cgroup_parent}/**/cgroup.procs"),
            *base.glob(f"{self.cgroup_parent}/**/cgroup.procs"),
        ]:
            try:
                pids.update(int(line) for line in procs.read_text().split())
            except OSError:
                continue
        return sorted(pids)

    def kill_worker(self, daemon_only: bool = False) -> None:
        """SIGKILL the worker's dockerd and containerd; unless `daemon_only`, its shims and
        containers too (a lost machine). With `daemon_only` the containers keep running."""
        targets = self.netns_pids() + ([] if daemon_only else self.container_pids())
        for pid in targets:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.daemon is not None:
            self.daemon.wait(timeout=30)
        if not daemon_only:
            wait_until(
                lambda: not self.netns_pids() and not self.container_pids(),
                30,
                f"every process of {self.worker.name} gone",
            )


def _interface_tag(prefix: str) -> str:
    """Interface names are at most 15 characters: a short stable tag per lab prefix."""
    return "dl" + hashlib.sha256(prefix.encode()).hexdigest()[:6]


def _check_free(network: ipaddress.IPv4Network) -> None:
    used = run(["ip", "-4", "-o", "addr", "show"]).stdout + run(["ip", "-4", "route"]).stdout
    for word in used.replace("/", " ").split():
        try:
            if ipaddress.IPv4Address(word) in network:
                raise LabError(
                    f"{network} is already in use on this machine ({word}); pick another"
                )
        except ipaddress.AddressValueError:
            continue


def _unmount_under(root: Path) -> None:
    """Lazily unmount every mount dockerd left under `root`, deepest first."""
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(str(root))
    ]
    for point in sorted(mounts, key=len, reverse=True):
        run(["umount", "-l", point], check=False)


def _start_worker(lab: SwarmLab, bridge: str, bridge_cidr: str) -> None:
    root = lab.root
    (root / "daemon.json").write_text("{}\n")  # never the machine's /etc/docker/daemon.json
    run(["ip", "netns", "exec", lab.netns, "ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "netns", "exec", lab.netns, "ip", "addr", "add", bridge_cidr, "dev", bridge])
    run(["ip", "netns", "exec", lab.netns, "ip", "link", "set", bridge, "up"])
    log = (root / "dockerd.log").open("wb")
    lab.daemon = subprocess.Popen(
        [
            "nsenter", f"--net=/run/netns/{lab.netns}", "dockerd",
            "--config-file", str(root / "daemon.json"), "-H", lab.worker.host,
            "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "dockerd.pid"), "--bridge", bridge,
            "--cgroup-parent", f"/{lab.cgroup_parent}",
            "--containerd-namespace", lab.netns, "--containerd-plugins-namespace", f"{lab.netns}-p",
        ],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"},  # no pull attempts
        start_new_session=True,
    )  # fmt: skip
    log.close()

    def ready() -> bool:
        if lab.daemon is not None and lab.daemon.poll() is not None:
            tail = (root / "dockerd.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise LabError(f"worker dockerd exited: {tail[0] if tail else '(no log)'}")
        return bool(lab.worker.docker("version", "--format", "{{.Server.Version}}", timeout=10))

    wait_until(ready, 60, "worker dockerd answering")


def _teardown(lab: SwarmLab, host_if: str, volume_prefix: str) -> list[str]:
    problems: list[str] = []

    def step(what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except (LabError, OSError, subprocess.SubprocessError) as exc:
            problems.append(f"{what}: {exc}")

    if lab.daemon is not None and lab.daemon.poll() is None:
        step("worker leave", lambda: lab.worker.docker("swarm", "leave", "--force", check=False))
    step("manager leave", lambda: problems.extend(leave_swarm(lab.manager, volume_prefix)))
    if lab.daemon is not None and lab.daemon.poll() is None:
        lab.daemon.send_signal(signal.SIGTERM)
        try:
            lab.daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            problems.append("worker dockerd ignored SIGTERM for 30s; killed")
    step("kill worker", lab.kill_worker)
    step("unmount", lambda: _unmount_under(lab.root))
    step("netns", lambda: run(["ip", "netns", "del", lab.netns], check=False))
    step("veth", lambda: run(["ip", "link", "del", host_if], check=False))
    for tree in Path("/sys/fs/cgroup").glob(f"*/{lab.cgroup_parent}"):
        for sub in sorted(tree.glob("**/"), key=lambda p: len(str(p)), reverse=True):
            step("cgroup", sub.rmdir)
    step("root", lambda: shutil.rmtree(lab.root))
    step("socket", lambda: Path(lab.worker.host.removeprefix("unix://")).unlink(missing_ok=True))
    return [p for p in problems if "No such file" not in p]


@contextmanager
def swarm_lab(
    images: Sequence[str],
    prefix: str | None = None,
    subnet: str = "172.31.250.0/24",
    bridge_cidr: str = "172.31.249.1/24",
    root: Path | None = None,
) -> Iterator[SwarmLab]:
    """Two-node swarm: the main engine (manager, advertising on the veth) and a worker dockerd in
    a netns with `images` copied in. Needs root, dockerd, nsenter and the main engine outside any
    swarm. Everything it made is removed on exit, whatever happened inside."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("nsenter") is None:
        raise LabError("a swarm lab needs root, dockerd and nsenter")
    state = MAIN.swarm_state()
    if state != "inactive":
        raise LabError(f"the main engine is already in a swarm (state {state}); leave it first")
    network = ipaddress.IPv4Network(subnet)
    _check_free(network)
    _check_free(ipaddress.IPv4Interface(bridge_cidr).network)
    prefix = prefix or f"durango-lab-{uuid.uuid4().hex[:6]}"
    tag = _interface_tag(prefix)
    host_if, ns_if, bridge = f"{tag}h", f"{tag}c", f"{tag}b"
    manager_ip, worker_ip = str(network[1]), str(network[2])
    workdir = root or Path("/tmp") / prefix
    lab = SwarmLab(
        prefix=prefix,
        root=workdir,
        manager=Node("manager", "", manager_ip),
        worker=Node("worker", f"unix://{workdir}.sock", worker_ip),
        netns=f"{prefix}-n2",
        cgroup_parent=f"{prefix}-n2",
    )
    workdir.mkdir(parents=True, exist_ok=False)
    try:
        ns = ["ip", "netns", "exec", lab.netns]
        run(["ip", "netns", "add", lab.netns])
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if])
        run(["ip", "link", "set", ns_if, "netns", lab.netns])
        run(["ip", "addr", "add", f"{manager_ip}/{network.prefixlen}", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        run([*ns, "ip", "addr", "add", f"{worker_ip}/{network.prefixlen}", "dev", ns_if])
        run([*ns, "ip", "link", "set", ns_if, "up"])
        run([*ns, "ip", "link", "set", "lo", "up"])
        run([*ns, "ip", "route", "add", "default", "via", manager_ip])
        _start_worker(lab, bridge, bridge_cidr)
        copy_images(MAIN, lab.worker, images)
        lab.manager.docker(
            "swarm", "init", "--advertise-addr", manager_ip, "--listen-addr", f"{manager_ip}:2377"
        )
        token = lab.manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        lab.worker.docker(
            "swarm", "join", "--advertise-addr", worker_ip, "--listen-addr", f"{worker_ip}:2377",
            "--token", token, f"{manager_ip}:2377", timeout=90,
        )  # fmt: skip
        worker_id = lab.worker.node_id()
        wait_until(lambda: lab.node_state(worker_id) == "ready", 60, "worker ready in the swarm")
        for node, label in ((lab.manager, "n1"), (lab.worker, "n2")):
            lab.manager.docker("node", "update", "--label-add", f"lab.node={label}", node.node_id())
        yield lab
    finally:
        problems = _teardown(lab, host_if, prefix)
        if problems:
            raise LabError(f"swarm lab {prefix} teardown: " + "; ".join(problems))
