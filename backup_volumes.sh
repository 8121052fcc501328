#!/bin/sh
# Back up, list and restore the deployment bundle from the shell: the same implementation as
# `doit backup`, `doit backups` and `doit restore` (tasks/deploy/backup.py).
#   ./backup_volumes.sh [backup|list|restore] [--dest DIR] [--keep N] [--from NAME] [--yes]
#                       [--drop] [--env-file FILE] [--project NAME]
set -eu
cd "$(dirname "$0")"
exec python3 -m tasks.cli.backup_volumes "$@"
