"""Generations of a project's data: what a restore builds beside the old state, and the way back.

A generation is a database and a set of volumes (and the image that runs on them). Generation 0
is what the bundle had before its first restore: the env file's DB_NAME and compose's default
volume names. A restore prepares generation N beside the live one (`<db>_g<N>`,
`<project>_<volume>_g<N>`) while the app keeps running, then switches: the app services stop
briefly, the live file (deploy/live.py) is replaced in one rename (the commit point for the
database and the volumes together) and they start on N. The generation switched away from stays,
whole, as the way back, until the operator drops it:
  doit restores                            the generations, which is live, where each came from
  doit restore-undo --confirm              switch back to the generation the live one replaced
  doit restore-drop --generation N --confirm   drop a generation that is not live: its database
                                           and the volumes no other kept generation uses
Records: `.durango/generations/<project>/<N>.json`, and `preparing.json` while a restore
prepares. A restore killed before its commit leaves that record; the next restore (or drop)
removes what it names (ending the staging database's sessions first) before it starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.core.errors import BackupError, DurangoError
from tasks.core.files import atomic_write_text
from tasks.core.pipeline import Pipeline
from tasks.core.ports import Service
from tasks.deploy import bundle, live, project_lock
from tasks.deploy.bundle import APP_SERVICES
from tasks.deploy.database import Database


@dataclass(frozen=True)
class Generation:
    number: int
    database: str
    volumes: dict[str, str]  # short name -> engine name, every volume the bundle switches
    image: str  # the image ID the app runs on it
    source: str = ""  # the backup it was restored from ("" for generation 0)
    created: str = ""
    previous: int | None = None  # the generation it replaced: where restore-undo goes

    def live_values(self) -> dict[str, str]:
        """The live file's values that make this generation the one compose uses."""
        values = {"GENERATION": str(self.number), "DB_NAME": self.database, "APP_IMAGE": self.image}
        for short, name in self.volumes.items():
            if short in live.VOLUME_KEYS:
                values[live.VOLUME_KEYS[short]] = name
        return values


@dataclass(frozen=True)
class Preparing:
    """What a restore is building (written before it creates anything)."""

    number: int
    database: str
    volumes: list[str] = field(default_factory=list)
    source: str = ""


def folder(pipe: Pipeline) -> Path:
    return pipe.settings.state_dir / "generations" / pipe.settings.compose_project


def _load(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def records(pipe: Pipeline) -> dict[int, Generation]:
    found = {}
    for path in folder(pipe).glob("[0-9]*.json"):
        data = _load(path)
        if data is None:
            continue
        try:
            generation = Generation(**data)  # type: ignore[arg-type]
        except TypeError:
            continue
        found[generation.number] = generation
    return found


def save(pipe: Pipeline, generation: Generation) -> None:
    text = json.dumps(asdict(generation), indent=2, sort_keys=True) + "\n"
    atomic_write_text(folder(pipe) / f"{generation.number}.json", text, mode=0o600)


def preparing(pipe: Pipeline) -> Preparing | None:
    data = _load(folder(pipe) / "preparing.json")
    if data is None:
        return None
    try:
        return Preparing(**data)  # type: ignore[arg-type]
    except TypeError:
        return None


def begin(pipe: Pipeline, prepared: Preparing) -> None:
    """Record what a restore is about to create, before it creates it."""
    text = json.dumps(asdict(prepared), indent=2, sort_keys=True) + "\n"
    atomic_write_text(folder(pipe) / "preparing.json", text, mode=0o600)


def end_preparing(pipe: Pipeline) -> None:
    (folder(pipe) / "preparing.json").unlink(missing_ok=True)


def current(pipe: Pipeline, image: str) -> Generation:
    """The generation the project runs on now; for generation 0 (no record yet) made from
    what compose names now and the image the app runs."""
    number = live.generation(pipe)
    known = records(pipe).get(number)
    if known is not None:
        return known
    names = bundle.volumes(pipe)
    return Generation(number, bundle.database_name(pipe), names, image)


def next_number(pipe: Pipeline, existing_volumes: set[str]) -> int:
    """A number no record, no leftover and no volume of this project has used."""
    used = set(records(pipe)) | {live.generation(pipe)}
    prepared = preparing(pipe)
    if prepared is not None:
        used.add(prepared.number)
    for name in existing_volumes:
        head, sep, tail = name.rpartition("_g")
        if sep and head.startswith(pipe.settings.compose_project) and tail.isdigit():
            used.add(int(tail))
    return max(used) + 1


def volume_name(pipe: Pipeline, short: str, number: int) -> str:
    return f"{pipe.settings.compose_project}_{short}_g{number}"


def database_name(base: str, number: int) -> str:
    name = f"{base}_g{number}"
    if len(name.encode()) > 63:
        raise BackupError(f"the database name {base} is too long for a generation suffix")
    return name


def recovery(prepared: Preparing | None, live_generation: int) -> str:
    """What a leftover prepare needs: "" none; "finish" its switch was committed (the live
    file names it), only the record is missing; "discard" it never was: remove what it made."""
    if prepared is None:
        return ""
    return "finish" if prepared.number == live_generation else "discard"


def recover(pipe: Pipeline, db: Database, generation_of: Mapping[str, str] | None = None) -> None:
    """Remove what an interrupted restore prepared and never switched to: its staging
    database (sessions ended first) and its volumes; or complete a committed one's record."""
    prepared = preparing(pipe)
    action = recovery(prepared, live.generation(pipe))
    if prepared is None or not action:
        return
    if action == "finish":
        values = dict(generation_of or live.read(pipe))
        names = {s: values[k] for s, k in live.VOLUME_KEYS.items() if k in values}
        save(pipe, Generation(prepared.number, prepared.database, names,
                              values.get("APP_IMAGE", ""), prepared.source))  # fmt: skip
        end_preparing(pipe)
        return
    print(f"restore: removing what an interrupted restore left (generation {prepared.number})")
    pipe.containers.remove_helpers(pipe.settings.compose_project)
    drop_database(pipe, db, prepared.database)
    for name in prepared.volumes:
        pipe.containers.remove_volume(name)
    end_preparing(pipe)


def drop_database(pipe: Pipeline, db: Database, name: str) -> None:
    """Drop a database of a non-live generation; on a tenant's shared server as its owner."""
    db.drop(name)


# --- switching: the only moment the app stops -------------------------------------------------


def app_services(pipe: Pipeline) -> list[Service]:
    project = pipe.settings.compose_project
    return [s for s in pipe.containers.services(project) if s.service in APP_SERVICES]


def start_on(pipe: Pipeline, services: list[str]) -> None:
    """Start the named app services on whatever the live file says (recreated by compose:
    new volumes, database, image), or the whole bundle when none ran."""
    if services:
        bundle.compose(pipe, "up", "--detach", "--wait", "--no-deps", *sorted(services))
    else:
        bundle.compose(pipe, "up", "--detach", "--wait")


def switch(pipe: Pipeline, to: Generation) -> None:
    """Stop the app services, commit `to` in the live file (one rename), start them on it. A
    failure before the commit starts again what was stopped; when they cannot start on `to`,
    the live file goes back and they start on what ran before."""
    containers = pipe.containers
    running = [s for s in app_services(pipe) if s.running]
    names = sorted({s.service for s in running})
    before = live.read(pipe)
    containers.stop(running)
    print(f"restore: stopped {', '.join(s.name for s in running) or 'nothing'}", flush=True)
    try:
        live.write(pipe, {**before, **to.live_values()})
    except BaseException:
        containers.start(running)
        print("restore: not switched; the services run again on what they had", flush=True)
        raise
    print(f"restore: switched to generation {to.number} (database {to.database})", flush=True)
    try:
        start_on(pipe, names)
    except DurangoError as exc:
        live.write(pipe, before)
        start_on(pipe, names)
        raise BackupError(
            f"the app did not start on generation {to.number} ({exc}); switched back to what "
            "ran before, which runs again; the new generation stays for a look "
            f"(`doit restores`; drop it with `doit restore-drop --generation {to.number} "
            "--confirm`)"
        ) from None


# --- the operator's commands -----------------------------------------------------------------


def list_generations(pipe: Pipeline) -> None:
    found = records(pipe)
    number = live.generation(pipe)
    if not found:
        print(f"restores: {pipe.settings.compose_project} runs on generation {number}; "
              "no restore has switched it yet")  # fmt: skip
    for generation in sorted(found.values(), key=lambda g: g.number, reverse=True):
        mark = " (live)" if generation.number == number else ""
        source = f" from {generation.source}" if generation.source else ""
        volumes = ", ".join(sorted(generation.volumes.values()))
        print(f"generation {generation.number}{mark}{source}: database {generation.database}, "
              f"image {generation.image[7:19]}, volumes {volumes}")  # fmt: skip
    prepared = preparing(pipe)
    if prepared is not None and prepared.number != number:
        print(f"generation {prepared.number}: interrupted while preparing; the next restore "
              "removes it")  # fmt: skip


def undo(pipe: Pipeline, confirm: bool) -> None:
    with project_lock.held(pipe, "restore-undo"):
        found = records(pipe)
        now = found.get(live.generation(pipe))
        if now is None or now.previous is None or now.previous not in found:
            raise BackupError("nothing to undo: the live generation replaced none that is kept")
        back = found[now.previous]
        if not pipe.containers.image_exists(back.image):
            raise BackupError(f"the image {back.image[7:19]} of generation {back.number} is gone")
        if not confirm:
            raise BackupError(
                f"restore-undo switches {pipe.settings.compose_project} back from generation "
                f"{now.number} to {back.number} (database {back.database}); run again with "
                "--confirm"
            )
        switch(pipe, back)
        print(f"restore-undo: running on generation {back.number}; generation {now.number} "
              f"stays (`doit restore-drop --generation {now.number} --confirm`)")  # fmt: skip


def drop(pipe: Pipeline, number: int, confirm: bool, db: Database) -> list[str]:
    """Drop a non-live generation's database and the volumes no other kept generation uses;
    what was removed. The caller holds the lock and gives a client of the server."""
    found = records(pipe)
    if number == live.generation(pipe):
        raise BackupError(f"generation {number} is live: switch away from it first")
    if number not in found:
        raise BackupError(f"no generation {number}; `doit restores` lists them")
    gone = found[number]
    others = [g for n, g in found.items() if n != number]
    shared_volumes = {name for g in others for name in g.volumes.values()}
    volumes = sorted(set(gone.volumes.values()) - shared_volumes)
    keep_db = gone.database in {g.database for g in others}
    if not confirm:
        raise BackupError(
            f"restore-drop removes generation {number}: database "
            f"{'(shared, kept)' if keep_db else gone.database}, volumes "
            f"{', '.join(volumes) or 'none'}; run again with --confirm"
        )
    if not keep_db:
        drop_database(pipe, db, gone.database)
    for name in volumes:
        pipe.containers.remove_volume(name)
    (folder(pipe) / f"{number}.json").unlink(missing_ok=True)
    return [*([] if keep_db else [gone.database]), *volumes]


PARAMS_UNDO = [
    {"name": "confirm", "long": "confirm", "type": bool, "default": False,
     "help": "switch back to the generation the live one replaced"},
]  # fmt: skip
PARAMS_DROP = [
    {"name": "generation", "long": "generation", "type": int, "default": -1,
     "help": "the generation to drop (doit restores lists them)"},
    {"name": "confirm", "long": "confirm", "type": bool, "default": False,
     "help": "consent to dropping its database and volumes"},
]  # fmt: skip


def kept_images(state_dir: Path) -> set[str]:
    """Every image a project runs on or can switch back to: the live files' APP_IMAGE and every
    generation record's image, of every project (what `doit prune` must keep)."""
    found = set()
    for path in (state_dir / "generations").glob("*/[0-9]*.json"):
        data = _load(path)
        if data is not None and isinstance(data.get("image"), str):
            found.add(str(data["image"]))
    for path in (state_dir / "live").glob("*.env"):
        for line in path.read_text().splitlines():
            name, _, value = line.partition("=")
            if name == "APP_IMAGE" and value:
                found.add(value)
    return found
