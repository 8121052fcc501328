"""A registry as a shared build cache: images are named by their content key, so whoever builds
first pushes `<registry>/<name>:<key12>` and every other machine pulls it instead of building.

A push or pull failure never fails a good build unless `registry_required=yes`; an unreachable
registry is reported once per run.
"""

from __future__ import annotations

import sys

from tasks.core.errors import RegistryError
from tasks.core.ports import ImageEngine


class RegistryCache:
    def __init__(self, engine: ImageEngine, registry: str, required: bool) -> None:
        self.engine = engine
        self.registry = registry.rstrip("/")
        self.required = required
        self._reported = False

    def _remote(self, name: str) -> str:
        return f"{self.registry}/{name}"

    def _trouble(self, exc: RegistryError) -> None:
        if self.required:
            raise exc
        if not self._reported:
            self._reported = True
            print(
                f"durango: warning: registry cache {self.registry} unreachable or refusing "
                f"({exc}); building locally",
                file=sys.stderr,
                flush=True,
            )

    def pull(self, stage: str, name: str, key: str, key_label: str) -> str | None:
        """The image for `key` from the registry, tagged locally; None when it has none."""
        if self._reported:
            return None
        try:
            image_id = self.engine.pull(self._remote(name), key[:12])
        except RegistryError as exc:
            if not exc.missing:
                self._trouble(exc)
            return None
        found = self.engine.image(image_id)
        if found is None or found.labels.get(key_label) != key:
            print(f"{stage}: {self._remote(name)}:{key[:12]} has another key; building instead")
            return None
        self.engine.tag(image_id, name, key[:12])
        self.engine.tag(image_id, name, "latest")
        print(f"{stage}: pulled {self._remote(name)}:{key[:12]} ({image_id[7:19]}) from the cache")
        return str(image_id)

    def push(self, stage: str, name: str, image_id: str, tags: list[str]) -> None:
        """Push under each tag; trouble is reported, fatal only with registry_required."""
        if self._reported and not self.required:
            return
        for tag in tags:
            self.engine.tag(image_id, self._remote(name), tag)
            try:
                self.engine.push(self._remote(name), tag)
            except RegistryError as exc:
                self._trouble(exc)
                return
            print(f"{stage}: pushed {self._remote(name)}:{tag}", flush=True)
