"""backup_volumes.sh: back up, list and restore the deployment bundle from the shell, through the
same implementation as `doit backup`, `doit backups` and `doit restore`. It runs outside doit
(from cron), so it skips the checkout's lock, but it takes the project's data lock like every
data operation: a backup started while a restore runs waits for it and says so (or, with
--no-wait, refuses in one line)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tasks.core.errors import DurangoError
from tasks.core.pipeline import Pipeline
from tasks.core.settings import load_settings
from tasks.deploy import backup, restore
from tasks.engine.containers import Containers
from tasks.engine.images import Engine


def main(argv: list[str]) -> int:
    """backup_volumes.sh: the same backups from the shell."""
    parser = argparse.ArgumentParser(
        prog="backup_volumes.sh", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "command", choices=["backup", "list", "restore"], nargs="?", default="backup"
    )
    parser.add_argument("--dest", help="backup folder (default: backups/)")
    parser.add_argument("--keep", help="backups to keep (default 7)")
    parser.add_argument("--from", dest="restore_from", help="backup to restore (default latest)")
    parser.add_argument("--yes", action="store_true", help="confirm the restore")
    parser.add_argument(
        "--no-wait", action="store_true", help="refuse instead of waiting for another operation"
    )
    parser.add_argument("--env-file", help="compose env file (default orangescrum-ee/.env)")
    parser.add_argument("--project", help="compose project (default orangescrum-ee)")
    args = parser.parse_args(argv)
    cli = {
        key: value
        for key, value in {
            "backup_dir": args.dest,
            "backup_keep": args.keep,
            "env_file": args.env_file,
            "compose_project": args.project,
        }.items()
        if value is not None
    }
    try:
        engine = Engine()
        # backup_volumes.sh runs in the project
        pipe = Pipeline(load_settings(Path.cwd(), cli), engine, Containers(engine))
        wait = not args.no_wait
        if args.command == "restore":
            restore.restore(pipe, args.restore_from or "latest", args.yes, wait)
        elif args.command == "list":
            backup.list_backups(pipe)
        else:
            backup.backup(pipe, wait=wait)
    except DurangoError as exc:
        print(f"backup_volumes: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
