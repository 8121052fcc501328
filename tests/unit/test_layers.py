"""The layers of tasks/ import only downwards, the engine layer alone talks to Docker, and no two
modules import each other (directly or round a longer loop)."""

from __future__ import annotations

import ast
from pathlib import Path

TASKS = Path(__file__).resolve().parents[2] / "tasks"
LAYERS = ["core", "formats", "engine", "build", "deploy", "cli"]
DOCKER_MODULES = {"docker", "requests"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(TASKS.rglob("*.py")):
        rel = path.relative_to(TASKS.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module an import statement names (`from a import b` counts a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "tasks":
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def test_every_module_sits_in_a_layer() -> None:
    loose = [m for m in modules() if m != "tasks" and layer(m) is None]
    assert not loose, f"modules outside the layers {LAYERS}: {loose}"


def test_imports_point_down_the_layers() -> None:
    upward = []
    for module, path in modules().items():
        own = layer(module)
        for imported in imports(path):
            theirs = layer(imported)
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{module} imports {imported}")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_only_the_engine_layer_talks_to_docker() -> None:
    talking = []
    for module, path in modules().items():
        if layer(module) == LAYERS.index("engine"):
            continue
        tree = ast.parse(path.read_text())
        sdk = {i.split(".")[0] for i in imports(path)} & DOCKER_MODULES
        if sdk:
            talking.append(f"{module} imports {', '.join(sorted(sdk))}")
        for node in ast.walk(tree):
            if isinstance(node, ast.List) and node.elts:
                first = node.elts[0]
                if isinstance(first, ast.Constant) and first.value == "docker":
                    talking.append(f"{module}:{node.lineno} runs the docker CLI")
    assert not talking, "\n".join(talking)


def test_no_module_imports_itself_round_a_loop() -> None:
    known = modules()
    graph = {m: {i for i in imports(p) if i in known and i != m} for m, p in known.items()}
    # a package's __init__ is imported by its modules' imports: only module edges count
    graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in graph.items()}
    loops = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                loops.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not loops, "import loops:\n" + "\n".join(loops)


def test_the_installed_distribution_puts_no_tasks_module_on_the_path(tmp_path: Path) -> None:
    """Other programs on this machine must not find a generic `tasks` package: the project runs
    from its checkout, and `pip install -e .` installs only its dependencies."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = "import importlib.util; print(importlib.util.find_spec('tasks'))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.stdout.strip() == "None", done.stdout + done.stderr
