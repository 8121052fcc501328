"""The rollout's steps against fakes (tests/unit/fakes.py), without an engine: traffic moves only
to a healthy release and only after its migrations; the old release is drained before it
stops; a failed step removes the release, records it, and names its log in one line; a
rollback that cannot go, or must not, changes nothing."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from fakes import FakeContainers, FakeImages, FakeRollout

from tasks.core.errors import DeployError, EngineError
from tasks.core.pipeline import Pipeline
from tasks.core.ports import Service
from tasks.core.settings import load_settings
from tasks.deploy import deploy, live, releases
from tasks.formats import haproxy
from tasks.formats.releases import (
    FAILED_HEALTH,
    RETIRED,
    ROLLED_BACK,
    SERVING,
    Records,
    Release,
)

REPO = Path(__file__).resolve().parents[2]
PROXY = Service("proxy-id", "p-orangescrum-proxy-1", "orangescrum-proxy", "", True)
OLD = Release(
    "aaaaaaaaaaaa", "app:aaaaaaaaaaaa", "sha256:a", attempted="2026-01-01T00:00:00+00:00",
    deployed="2026-01-01T00:00:00+00:00", status=SERVING, slot="blue", health_path="/health",
    migrations={"phinxlog": ("1",)}, backup="b-a",
)  # fmt: skip
NEW = Release(
    "bbbbbbbbbbbb", "app:bbbbbbbbbbbb", "sha256:b", attempted="2026-01-02T00:00:00+00:00",
    health_path="/health", migrations={"phinxlog": ("1", "2")}, backup="b-b",
)  # fmt: skip


class Clock:
    """time.monotonic and time.sleep for the module under test: sleeping moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Front(FakeContainers):
    """The bundle's containers with a proxy that keeps HAProxy's state of its two servers, and
    release containers that answer their health path (or not)."""

    healthy: set[str] = field(default_factory=set)
    servers: dict[str, str] = field(default_factory=lambda: {"blue": "UP", "green": "MAINT"})
    sessions: dict[str, int] = field(default_factory=lambda: {"blue": 0, "green": 0})
    commands: list[str] = field(default_factory=list)

    def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str = "",
    ) -> str:
        if container_id == PROXY.id:
            return self.api(cmd[-1])
        self.calls.append("exec")
        if container_id not in self.healthy:
            raise EngineError(f"`sh` in {container_id} exited 22")
        return ""

    def api(self, command: str) -> str:
        if command == "show stat":
            rows = ["# pxname,svname,qcur,scur,status,check_status"]
            rows += [
                f"app,{s},0,{self.sessions[s]},{st},{'L4OK' if st == 'UP' else 'INI'}"
                for s, st in self.servers.items()
            ]
            return "\n".join(rows) + "\n"
        self.commands.append(command)
        for part in command.split("; "):
            words = part.split()
            slot = words[2].split("/")[1]
            if words[3] == "state":
                self.servers[slot] = {"ready": "UP", "drain": "DRAIN", "maint": "MAINT"}[words[4]]
        return ""


def pipeline(tmp_path: Path, containers: FakeContainers) -> Pipeline:
    root = tmp_path / "project"
    shutil.copytree(REPO / "orangescrum-ee" / "proxy", root / "orangescrum-ee" / "proxy")
    env = root / "orangescrum-ee" / ".env"
    env.write_text("DB_HOST=orangescrum-db\nDB_NAME=demo\nDB_USERNAME=demo\n")
    settings = load_settings(
        root,
        {"compose_project": "p", "health_timeout": "3", "drain_timeout": "5"},
        environ={},
    )
    return Pipeline(settings, FakeImages(), containers)


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(deploy, "time", fake)
    monkeypatch.setattr("tasks.deploy.proxy.time", fake)
    return fake


def serving_now(pipe: Pipeline, *more: Release) -> Records:
    records = Records("p", (OLD, *more))
    releases.save(pipe, records)
    return records


def test_traffic_moves_to_the_healthy_release_then_the_old_one_drains_and_stops(
    tmp_path: Path,
) -> None:
    front = Front(running=[PROXY], healthy={"p-app-bbbbbbbbbbbb"})
    pipe = pipeline(tmp_path, front)
    rollout = FakeRollout(containers={"p-app-aaaaaaaaaaaa": None})
    records = deploy.go_live(pipe, rollout, serving_now(pipe), NEW, RETIRED, FAILED_HEALTH)
    assert front.commands == [
        haproxy.point("green", "p-app-bbbbbbbbbbbb", "172.18.0.9"),
        haproxy.drain("blue"),
        haproxy.retire("blue"),
    ]
    assert ("stop", "p-app-aaaaaaaaaaaa") in rollout.calls
    assert rollout.calls.index(("stop", "p-app-aaaaaaaaaaaa")) > rollout.calls.index(
        ("keep_running", "p-app-bbbbbbbbbbbb")
    )
    assert "put_file" in front.calls  # the configuration it restarts with
    serving = records.serving()
    assert serving is not None and (serving.key, serving.slot) == (NEW.key, "green")
    assert releases.load(pipe).find("aaaa") == replace(OLD, status=RETIRED)
    assert live.read(pipe)["APP_IMAGE"] == NEW.image


def test_a_release_failing_its_health_check_never_receives_traffic(tmp_path: Path) -> None:
    front = Front(running=[PROXY], healthy=set())
    pipe = pipeline(tmp_path, front)
    rollout = FakeRollout(containers={"p-app-aaaaaaaaaaaa": None, "p-app-bbbbbbbbbbbb": None})
    with pytest.raises(DeployError) as failed:
        deploy.go_live(pipe, rollout, serving_now(pipe), NEW, RETIRED, FAILED_HEALTH)
    line = str(failed.value)
    assert "\n" not in line and "failed its health check" in line and "never received" in line
    log = Path(line.rsplit("read ", 1)[1])
    assert log.read_text() == "log of p-app-bbbbbbbbbbbb\n"
    assert front.commands == []  # the proxy was never told about it
    assert ("remove", "p-app-bbbbbbbbbbbb") in rollout.calls
    assert ("stop", "p-app-aaaaaaaaaaaa") not in rollout.calls
    records = releases.load(pipe)
    assert records.serving() == OLD
    assert records.find("bbbb").status == FAILED_HEALTH  # type: ignore[union-attr]
    assert "APP_IMAGE" not in live.read(pipe)


def test_a_release_that_exits_fails_at_once(tmp_path: Path, clock: Clock) -> None:
    front = Front(running=[PROXY])
    pipe = pipeline(tmp_path, front)
    rollout = FakeRollout(containers={"p-app-bbbbbbbbbbbb": 3})
    rollout.containers["p-app-bbbbbbbbbbbb"] = 3
    problem = deploy.wait_healthy(pipe, rollout, "p-app-bbbbbbbbbbbb", "/health")
    assert problem == "exited (3) before it answered its health check /health"
    assert clock.now == 0


def test_failed_migrations_name_their_saved_log(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, Front())
    rollout = FakeRollout(migrate_exit=1)
    with pytest.raises(DeployError) as failed:
        deploy.migrate(pipe, rollout, NEW)
    line = str(failed.value)
    assert "the migrations of bbbbbbbbbbbb failed (exit 1)" in line and "\n" not in line
    assert Path(line.rsplit("read ", 1)[1]).is_file()
    assert ("remove", "p-migrate-bbbbbbbbbbbb") in rollout.calls


def test_a_rollback_with_no_earlier_release_changes_nothing(tmp_path: Path) -> None:
    front = Front(running=[PROXY])
    pipe = pipeline(tmp_path, front)
    before = serving_now(pipe)
    rollout = FakeRollout()
    with pytest.raises(DeployError, match=r"^rollback: no earlier release .*; nothing changed$"):
        deploy.rollback(pipe, rollout)
    assert releases.load(pipe) == before
    assert front.changed() == [] and rollout.calls == []


def test_a_rollback_past_a_migration_changes_nothing_and_names_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front = Front(running=[PROXY])
    pipe = pipeline(tmp_path, front)
    newer = replace(OLD, key="cccccccccccc", image="app:c", image_id="sha256:c",
                    attempted="2026-01-03T00:00:00+00:00", migrations={"phinxlog": ("1", "2")},
                    backup="b-c")  # fmt: skip
    older = replace(OLD, status=RETIRED)
    before = Records("p", (older, newer))
    releases.save(pipe, before)
    monkeypatch.setattr(releases, "applied_migrations", lambda *a: {"phinxlog": ["1", "2"]})
    rollout = FakeRollout(images={"sha256:a"})
    with pytest.raises(DeployError) as refused:
        deploy.rollback(pipe, rollout)
    line = str(refused.value)
    assert "refused" in line and "doit restore --from b-c --confirm" in line
    assert line.endswith("nothing changed") and "\n" not in line
    assert releases.load(pipe) == before
    assert front.changed() == [] and ("ensure_volume", "p-release-proxy") not in rollout.calls


def test_a_rollback_to_a_pruned_image_changes_nothing(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path, Front(running=[PROXY]))
    newer = replace(NEW, status=SERVING, deployed="2026-01-02T00:00:00+00:00", slot="green")
    releases.save(pipe, Records("p", (replace(OLD, status=RETIRED), newer)))
    with pytest.raises(DeployError, match="no longer on this engine; nothing changed"):
        deploy.rollback(pipe, FakeRollout(images=set()))


def test_a_rollback_goes_back_and_marks_the_one_it_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front = Front(running=[PROXY], healthy={"p-app-aaaaaaaaaaaa"},
                  servers={"blue": "MAINT", "green": "UP"})  # fmt: skip
    pipe = pipeline(tmp_path, front)
    newer = replace(NEW, status=SERVING, deployed="2026-01-02T00:00:00+00:00", slot="green",
                    migrations=OLD.migrations)  # fmt: skip
    releases.save(pipe, Records("p", (replace(OLD, status=RETIRED), newer)))
    monkeypatch.setattr(releases, "applied_migrations", lambda *a: {"phinxlog": ["1"]})
    rollout = FakeRollout(images={"sha256:a"}, containers={"p-app-bbbbbbbbbbbb": None})
    deploy.rollback(pipe, rollout)
    records = releases.load(pipe)
    assert records.serving().key == OLD.key  # type: ignore[union-attr]
    assert records.find("bbbb").status == ROLLED_BACK  # type: ignore[union-attr]
    assert front.commands[0] == haproxy.point("blue", "p-app-aaaaaaaaaaaa", "172.18.0.9")
    assert front.commands[1:] == [haproxy.drain("green"), haproxy.retire("green")]
