"""Builder profiles: the settings each `builder=<name>` implies."""

from __future__ import annotations

# Builder profiles: what `builder=<name>` changes unless a key is set explicitly (base_args are
# merged under the user's). docs/STATIC_BUILD.md compares them.
#   static:       production; upstream's musl static builder, fully static binary; Alpine 3.23.
#   static-gnu:   upstream's gnu builder, glibc dynamic and the rest static; a glibc runtime.
#   local:        Debian packages + Go module proxy only; Debian runtime for the dynamic binary.
#   local-static: built here too, fully static; the lean local runtime image.
PROFILES: dict[str, dict[str, object]] = {
    "static": {"base_dockerfile": "base-build.Dockerfile", "runtime_base": "alpine:3.23"},
    "static-gnu": {
        "base_dockerfile": "base-build.Dockerfile",
        "base_args": {
            "FRANKENPHP_BUILDER_IMAGE": "dunglas/frankenphp:static-builder-gnu-1.12.7",
            "SPC_LIBC": "glibc",
        },
        "runtime_base": "debian:bookworm-slim",
    },
    "local": {"base_dockerfile": "base-local.Dockerfile", "runtime_base": "debian:bookworm-slim"},
    "local-static": {
        "base_dockerfile": "base-local-static.Dockerfile",
        "runtime_base": "durango-local/lean:1",
    },
}
