"""Base image from a registry cache vs building it: push a built base image to a loopback
registry, then pull it into a fresh second engine ("machine B", own data root), timed.

    python bench/registry_pull.py [--image durango-ci-local-base:latest]

The cold-build figure to compare with is the base stage's own "built ... in N s" line.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import docker
from common import machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            check()
            return
        except Exception:
            if time.monotonic() > deadline:
                sys.exit(f"{what} did not start")
            time.sleep(0.3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default="durango-ci-local-base:latest")
    args = parser.parse_args()
    local = docker.from_env()
    image = local.images.get(args.image)
    size_gb = image.attrs["Size"] / 1e9
    with tempfile.TemporaryDirectory(prefix="durango-bench-") as tmp:
        port = free_port()
        config = Path(tmp, "registry.yml")
        config.write_text(
            f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp}/registry\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        registry = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        bridge = f"durango-{uuid.uuid4().hex[:6]}"
        host = f"tcp://127.0.0.1:{free_port()}"
        daemon = None
        try:
            wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/"), "registry")
            remote_ref = f"127.0.0.1:{port}/bench/base"
            image.tag(remote_ref, "key")
            started = time.perf_counter()
            for event in local.api.push(remote_ref, "key", stream=True, decode=True):
                if "error" in event:
                    sys.exit(f"push failed: {event['error']}")
            push_s = time.perf_counter() - started

            subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", "172.31.252.1/24", "dev", bridge], check=True)
            subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
            daemon = subprocess.Popen(
                ["dockerd", "--host", host, "--data-root", f"{tmp}/engine2",
                 "--exec-root", f"{tmp}/exec2", "--pidfile", f"{tmp}/engine2.pid",
                 "--bridge", bridge, "--iptables=false", "--ip-masq=false",
                 "--containerd-namespace", bridge, "--containerd-plugins-namespace", f"{bridge}p"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_for(lambda: docker.DockerClient(base_url=host).ping(), "second engine")
            remote = docker.DockerClient(base_url=host, timeout=1800)
            started = time.perf_counter()
            for event in remote.api.pull(remote_ref, "key", stream=True, decode=True):
                if "error" in event:
                    sys.exit(f"pull failed: {event['error']}")
            pull_s = time.perf_counter() - started
            same = remote.images.get(f"{remote_ref}:key").id == image.id
        finally:
            local.images.remove(f"127.0.0.1:{port}/bench/base:key", noprune=True)
            if daemon is not None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=120)
            subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)
            registry.terminate()
            registry.wait(timeout=30)
            shutil.rmtree(f"{tmp}/engine2", ignore_errors=True)
    print(f"machine: {machine()}")
    print(
        f"| base image {args.image} ({size_gb:.2f} GB) | push to loopback registry "
        f"{push_s:.0f} s | pull into a fresh engine {pull_s:.0f} s | same image ID: {same} |"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
