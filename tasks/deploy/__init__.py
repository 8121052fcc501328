"""The deploy layer: what runs and keeps the bundle's data: up/down, backups and restores, the
database they reach, tenants, releases, and pruning images. Above the build layer: it may ask a
stage for its current image, never the other way round."""
