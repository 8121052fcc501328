"""Which files of a folder a build context sends, by the engine's own .dockerignore rules (the
docker SDK's implementation of them), so a stage's key covers exactly what the engine receives."""

from __future__ import annotations

from pathlib import Path

from docker.utils.build import exclude_paths


def dockerignore_patterns(context_dir: Path) -> list[str]:
    ignore = context_dir / ".dockerignore"
    if not ignore.exists():
        return []
    lines = (line.strip() for line in ignore.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def sent_paths(context_dir: Path, dockerfile: str) -> set[str]:
    """Relative paths (files, folders, links) of `context_dir` the engine would receive."""
    return set(exclude_paths(str(context_dir), dockerignore_patterns(context_dir), dockerfile))
