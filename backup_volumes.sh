#!/bin/sh
# Back up, list and restore the deployment bundle from the shell: the same implementation as
# `doit backup`, `doit backups` and `doit restore` (tasks/deploy/backup.py).
# It takes the project's data lock (a backup from cron waits for a restore, and says so).
#   ./backup_volumes.sh [backup|list|restore] [--dest DIR] [--keep N] [--from NAME] [--yes]
#                       [--no-wait] [--env-file FILE] [--project NAME]
set -eu
cd "$(dirname "$0")"
exec python3 -m tasks.cli.backup_volumes "$@"
