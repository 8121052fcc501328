"""The cli layer: entry points other than doit (backup_volumes.sh). It only parses arguments and
calls the deploy layer, printing its errors as one line."""
