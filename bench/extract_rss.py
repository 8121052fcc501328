"""Peak RSS of the doit process while it extracts a large binary (default 300 MB), against the
peak RSS of a bare `import doit, docker, git`, measured in the same run; plus throughput.
Target: < 100 MB.

    python bench/extract_rss.py [--mb 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import doit, machine, make_app, make_project, peak_rss_mb, remove_images

FLOOR = [sys.executable, "-c", "import doit, docker, git"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durango-bench-") as tmp:
        app = Path(tmp) / "app"
        make_app(app, 3)
        root, prefix = make_project(Path(tmp), app, f'embed_args = {{ PAD_MB = "{args.mb}" }}')
        try:
            doit(root, "embed")
            started = time.perf_counter()
            rss = peak_rss_mb([sys.executable, "-m", "doit", "extract"], root)
            seconds = time.perf_counter() - started
            binary = root / "orangescrum-ee" / "orangescrum-app" / "orangescrum-ee"
            size_mb = binary.stat().st_size / 1e6
            floor = peak_rss_mb(FLOOR, root)
        finally:
            remove_images(prefix)
    print(f"machine: {machine()}")
    print(
        f"| extract {size_mb:.0f} MB | peak RSS {rss:.0f} MB (import floor {floor:.0f} MB) | "
        f"{seconds:.1f} s whole doit run, {size_mb / seconds:.0f} MB/s | target < 100 MB: "
        f"{'ok' if rss < 100 else 'OVER TARGET'} |"
    )
    return 0 if rss < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
