"""Latency during a release: p50/p99/max of requests through the release proxy while `doit deploy`
(or `doit rollback`) moves traffic, against the steady state measured just before in the same
run, with the same clients; and every answer that was not a 200.

    python bench/deploy.py [--rounds 3] [--clients 4] [--baseline 20]

The demo app is built with the local profile (its base image must exist) twice (v1, v2: two
release images, both built before anything is measured, so that a round times the rollout and
not a build); the bundle runs with its bundled PostgreSQL. Round 1 deploys v1 -> v2 (backup,
migrations, start, switch, drain), round 2 rolls back to v1, round 3 deploys v2 again, and so
on. Each round: `--baseline` seconds of steady state,
then the deploy or rollback under the same load, then 3 s more.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import docker
from common import REPO, load, machine

sys.path.insert(0, str(REPO / "tests"))
from helpers import POSTGRES, demo_app_repo, free_port, git, make_local_project, remove_images

PATHS = ("/", "/home/healthcheck")


@dataclass
class Sample:
    started: float
    seconds: float
    status: int  # 0: the connection failed


@dataclass
class Load:
    port: int
    clients: int
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        n = 0
        while not self.stop.is_set():
            path = PATHS[n % 2]
            n += 1
            started = time.monotonic()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.samples.append(Sample(started, time.monotonic() - started, status))

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.client, daemon=True) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        return threads

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.started < end]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def summary(samples: list[Sample]) -> tuple[int, float, float, float, int]:
    """(requests, p50 ms, p99 ms, max ms, answers other than 200 and failed connections)."""
    times = [s.seconds * 1000 for s in samples]
    bad = sum(1 for s in samples if s.status != 200)
    return (
        len(samples),
        statistics.median(times),
        percentile(times, 0.99),
        max(times),
        bad,
    )


def doit(root: Path, args: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "doit", *args], cwd=root, env={**os.environ, **env},
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--baseline", type=float, default=20.0)
    options = parser.parse_args()
    prefix = f"durango-bench-deploy-{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="durango-bench-deploy-"))
    app = demo_app_repo(tmp / "demo-app")
    config = f'proxy_image = "{prefix}-proxy"\n'
    root = make_local_project(tmp / "project", app.path, prefix, extra_config=config)
    port = free_port()
    env = {"APP_PORT": str(port), "APP_BIND": "127.0.0.1", "DB_IMAGE": POSTGRES}
    settings = [
        "env_file=orangescrum-ee/.env.test-bundled", "compose_profiles=bundled-db",
        f"compose_project={prefix}", f"backup_dir={tmp / 'backups'}",
    ]  # fmt: skip
    print(f"machine: {machine()}; load {load():.2f}", flush=True)
    engine = docker.from_env()
    try:
        code, out, _ = doit(root, ["deploy", *settings], env)
        assert code == 0, out
        (app.path / "VERSION").write_text("2.0.0\n")
        git(app.path, "commit", "-qam", "v2")
        code, out, _ = doit(root, ["runtime", *settings], env)  # v2 built, not yet deployed
        assert code == 0, out
        traffic = Load(port, options.clients)
        threads = traffic.start()
        time.sleep(3)  # warm: connections open, PHP workers started
        rows = []
        for number in range(options.rounds):
            action = ["rollback"] if number % 2 else ["deploy"]
            base_start = time.monotonic()
            time.sleep(options.baseline)
            started = time.monotonic()
            code, out, took = doit(root, [*action, *settings], env)
            assert code == 0, out
            ended = time.monotonic()
            time.sleep(3)
            steady = summary(traffic.window(base_start, started))
            during = summary(traffic.window(started, ended))
            rows.append((number + 1, action[0], took, steady, during, load()))
            print(
                f"round {number + 1} {action[0]} ({took:.1f}s): steady {steady}, during {during}",
                flush=True,
            )
        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=60)
        print()
        print(
            "| round | command | took | steady p50 / p99 / max (ms) | during p50 / p99 / max "
            "(ms) | p99 ratio | requests steady / during | not 200 | load |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for number, action_name, took, steady, during, after in rows:
            ratio = during[2] / steady[2] if steady[2] else 0.0
            print(
                f"| {number} | {action_name} | {took:.1f} s | {steady[1]:.1f} / {steady[2]:.1f} / "
                f"{steady[3]:.1f} | {during[1]:.1f} / {during[2]:.1f} / {during[3]:.1f} | "
                f"{ratio:.2f} | {steady[0]} / {during[0]} | {steady[4] + during[4]} | "
                f"{after:.2f} |"
            )
        bad = Counter(s.status for s in traffic.samples if s.status != 200)
        print(
            f"\nall requests: {len(traffic.samples)}; not 200 (0: connection failed): {dict(bad)}"
        )
        if bad:
            proxy_log = subprocess.run(
                ["docker", "logs", "--tail", "30", f"{prefix}-orangescrum-proxy-1"],
                capture_output=True, text=True,
            )  # fmt: skip
            print(proxy_log.stdout + proxy_log.stderr)
    finally:
        bundle = root / "orangescrum-ee"
        compose = [
            "docker", "compose", "-p", prefix, "-f", str(bundle / "docker-compose.yaml"),
            "-f", str(bundle / "docker-compose.release.yaml"),
            "--env-file", str(bundle / ".env.test-bundled"), "--profile", "bundled-db",
            "down", "--volumes", "--remove-orphans",
        ]  # fmt: skip
        down_env = {**os.environ, **env, "PROXY_STATE_VOLUME": f"{prefix}-release-proxy"}
        subprocess.run(compose, env=down_env, capture_output=True)
        subprocess.run(["docker", "volume", "rm", f"{prefix}-release-proxy"], capture_output=True)
        remove_images(engine, prefix)


if __name__ == "__main__":
    main()
