"""Fakes of the engine protocols (core/ports.py) for unit tests: they answer from plain data and
record every call, so a test can say which steps a decision reached and that nothing changed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.ports import BuildRequest, Built, ImageInfo, Service, Streamed, Volume

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# What changes data or containers: a refused operation must have made none of these calls.
CHANGING = {
    "compose", "stop", "start", "create_volume", "remove_volume", "ensure_volume", "unpack",
    "put_file", "remove_image", "helper", "exec", "exec_stream", "run_once",
}  # fmt: skip


def compose_config() -> dict[str, object]:
    """A captured `docker compose config --format json` of the bundle (project `demo`,
    bundled-db profile, VOLUME_APP_UPLOADS switched to demo_app-uploads_g3)."""
    data = json.loads((FIXTURES / "compose-config.json").read_text())
    assert isinstance(data, dict)
    return data


@dataclass
class FakeImages:
    images: dict[str, ImageInfo] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def image(self, ref: str) -> ImageInfo | None:
        return self.images.get(ref)

    def forget(self) -> None:
        pass

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        self.calls.append("tag")

    def untag(self, ref: str) -> None:
        self.calls.append("untag")

    def pull(self, repository: str, tag: str) -> str:
        raise AssertionError("no pulls in unit tests")

    def push(self, repository: str, tag: str) -> None:
        raise AssertionError("no pushes in unit tests")

    def arch(self) -> str:
        return "x86_64"

    def build(self, request: BuildRequest) -> Built:
        raise AssertionError("no builds in unit tests")

    def copy_file_out(
        self, image: str, path_in_image: str, dest: Path, progress: Callable[[int, int], None]
    ) -> tuple[str, int]:
        raise AssertionError("no copies in unit tests")


@dataclass
class FakeContainers:
    """A bundle's containers and volumes as data. `config` is what compose_config answers."""

    config: dict[str, object] = field(default_factory=compose_config)
    running: list[Service] = field(default_factory=list)
    volume_names: dict[str, str] = field(default_factory=dict)  # engine name -> short name
    present_images: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def changed(self) -> list[str]:
        return [c for c in self.calls if c in CHANGING]

    def compose(
        self, compose_file: Path, env_file: Path, args: Sequence[str], env: Mapping[str, str]
    ) -> None:
        self.calls.append("compose")

    def compose_config(
        self, compose_file: Path, env_file: Path, args: Sequence[str], env: Mapping[str, str]
    ) -> dict[str, object]:
        self.calls.append("compose_config")
        return self.config

    def services(self, project: str) -> list[Service]:
        return list(self.running)

    def service(self, project: str, name: str) -> Service | None:
        return next((s for s in self.running if s.service == name and s.running), None)

    def stop(self, services: Sequence[Service]) -> None:
        self.calls.append("stop")

    def start(self, services: Sequence[Service]) -> None:
        self.calls.append("start")

    def volumes(self, project: str) -> dict[str, Volume]:
        return {short: Volume(name, short) for name, short in self.volume_names.items()}

    def ensure_volume(self, project: str, short: str) -> Volume:
        self.calls.append("ensure_volume")
        return Volume(f"{project}_{short}", short)

    def run_once(self, image: str, cmd: Sequence[str], env: Mapping[str, str]) -> str:
        self.calls.append("run_once")
        return ""

    def images_named(self, repository: str) -> list[ImageInfo]:
        return []

    def images_in_use(self) -> set[str]:
        return set()

    def remove_image(self, image: ImageInfo) -> None:
        self.calls.append("remove_image")

    def layers_size(self) -> int:
        return 0

    def image_labels(self, image_id: str) -> dict[str, str]:
        return {}

    def image_exists(self, ref: str) -> bool:
        return ref in self.present_images

    def remove_helpers(self, project: str) -> None:
        self.calls.append("remove_helpers")

    @contextlib.contextmanager
    def helper(
        self, image: str, volumes: Mapping[str, str], like: Service | None = None, project: str = ""
    ) -> Iterator[Service]:
        self.calls.append("helper")
        yield Service("helper", "helper", "", image, True)

    def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str = "",
    ) -> str:
        self.calls.append("exec")
        return ""

    def archive_out(self, container_id: str, path: str, dest: Path) -> tuple[str, int]:
        self.calls.append("archive_out")
        return "", 0

    def put_file(self, container_id: str, path: str, source: Path) -> None:
        self.calls.append("put_file")

    def unpack(self, container_id: str, path: str, tar_file: Path) -> None:
        self.calls.append("unpack")

    def exec_stream(
        self,
        container_id: str,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        user: str = "",
        stdin: Path | bytes | None = None,
        stdout: Path | None = None,
    ) -> Streamed:
        self.calls.append("exec_stream")
        return Streamed(0, b"", "", 0, "")

    def volume_labels(self, name: str) -> dict[str, str] | None:
        short = self.volume_names.get(name)
        return None if short is None else {"com.docker.compose.volume": short}

    def create_volume(self, name: str, project: str, short: str) -> Volume:
        self.calls.append("create_volume")
        self.volume_names[name] = short
        return Volume(name, short)

    def remove_volume(self, name: str) -> None:
        self.calls.append("remove_volume")
        self.volume_names.pop(name, None)

    def project_volumes(self, project: str) -> list[Volume]:
        return [Volume(name, short) for name, short in self.volume_names.items()]


@dataclass
class FakeRollout:
    """The release rollout's engine calls (deploy.RolloutEngine) as data: containers by name
    with their exit code (None: running), and every call recorded."""

    containers: dict[str, int | None] = field(default_factory=dict)
    migrate_exit: int = 0
    images: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def find(self, name: str) -> Service | None:
        if name not in self.containers:
            return None
        return Service(name, name, "orangescrum-app", "", self.containers[name] is None)

    def exit_code(self, name: str) -> int | None:
        return self.containers.get(name)

    def wait(self, name: str, timeout: int) -> int:
        self.calls.append(("wait", name))
        return self.migrate_exit

    def save_logs(self, name: str, dest: Path) -> None:
        self.calls.append(("save_logs", name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(f"log of {name}\n")

    def remove(self, name: str) -> None:
        self.calls.append(("remove", name))
        self.containers.pop(name, None)

    def stop(self, name: str, timeout: int) -> None:
        self.calls.append(("stop", name))
        if name in self.containers:
            self.containers[name] = 0

    def address(self, name: str, network: str) -> str:
        return "172.18.0.9"

    def keep_running(self, name: str) -> None:
        self.calls.append(("keep_running", name))

    def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        self.calls.append(("ensure_volume", name))

    def image_exists(self, ref: str) -> bool:
        return ref in self.images
