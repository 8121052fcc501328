"""docs/ARCHITECTURE.md matches the code: it names every module of tasks/ (as layer/module.py)
and draws the layers in the order the import rule enforces."""

from __future__ import annotations

from pathlib import Path

from test_layers import LAYERS

ROOT = Path(__file__).resolve().parents[2]


def test_the_architecture_page_names_every_module() -> None:
    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    modules = [
        p.relative_to(ROOT / "tasks").as_posix()
        for p in sorted((ROOT / "tasks").rglob("*.py"))
        if p.name != "__init__.py"
    ]
    missing = [m for m in modules if f"`{m}`" not in page]
    assert not missing, f"docs/ARCHITECTURE.md does not name: {missing}"
    named = {w.strip("`") for w in page.split() if w.strip("`(),.;:").endswith(".py")}
    gone = sorted(n for n in named if n.count("/") == 1 and n.split("/")[0] in LAYERS
                  and n.strip("`(),.;:") not in modules)  # fmt: skip
    assert not gone, f"docs/ARCHITECTURE.md names modules that do not exist: {gone}"


def test_the_drawing_shows_the_layers_top_down() -> None:
    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    drawing = page.split("```", 2)[1]
    rows = [
        line.split("│")[1].split()[0]
        for line in drawing.splitlines()
        if line.strip().startswith("│ ")
        and line.split("│")[1].split()
        and line.split("│")[1].split()[0] in LAYERS
    ]
    assert rows == list(reversed(LAYERS)), rows
