"""No-op `doit` on a fully built pipeline vs the import floor (`import doit, docker, git`),
measured in the same run. Targets: <= 1.3x with a small app, <= 2.0x with 20,000 files.

    python bench/noop.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import doit, machine, make_app, make_project, median_pair, remove_images

FLOOR = [sys.executable, "-c", "import doit, docker, git"]
NOOP = [sys.executable, "-m", "doit"]


def measure(files: int, rounds: int, target: float) -> bool:
    with tempfile.TemporaryDirectory(prefix="durango-bench-") as tmp:
        app = Path(tmp) / "app"
        make_app(app, files)
        root, prefix = make_project(Path(tmp), app)
        try:
            doit(root)  # build everything once
            out = doit(root)
            assert ". " not in out.replace("-- ", ""), f"second run was not a no-op:\n{out}"
            floor, noop = median_pair(FLOOR, NOOP, root, rounds)
        finally:
            remove_images(prefix)
    ratio = noop / floor
    verdict = "ok" if ratio <= target else "OVER TARGET"
    print(
        f"| {files:>6} files | import floor {floor * 1000:6.0f} ms | no-op doit "
        f"{noop * 1000:6.0f} ms | {ratio:4.2f}x (target <= {target}x) {verdict} |"
    )
    return ratio <= target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"machine: {machine()}; median of {args.rounds} interleaved runs")
    small = measure(3, args.rounds, 1.3)
    large = measure(20_000, args.rounds, 2.0)
    return 0 if small and large else 1


if __name__ == "__main__":
    sys.exit(main())
