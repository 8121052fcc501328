"""Builder profiles: the settings each `builder=<name>` implies."""

from __future__ import annotations

# Builder profiles: what `builder=<name>` changes unless a key is set explicitly (base_args are
# merged under the user's). docs/STATIC_BUILD.md compares them.
#   static:       production; upstream's gnu static builder: glibc dynamic, the rest static, on a
#                 glibc runtime (glibc's allocator and opcache's JIT; FrankenPHP's performance
#                 docs advise against musl in production).
#   static-musl:  upstream's musl static builder, fully static binary; Alpine 3.23.
#   local:        Debian packages + Go module proxy only; Debian runtime for the dynamic binary.
#   local-static: built here too, fully static; the lean local runtime image.
PROFILES: dict[str, dict[str, object]] = {
    "static": {"base_dockerfile": "base-build.Dockerfile", "runtime_base": "debian:bookworm-slim"},
    "static-musl": {
        "base_dockerfile": "base-build.Dockerfile",
        "base_args": {
            "FRANKENPHP_BUILDER_IMAGE": "dunglas/frankenphp:static-builder-musl-1.12.7",
            "SPC_LIBC": "musl",
        },
        "runtime_base": "alpine:3.23",
    },
    "local": {"base_dockerfile": "base-local.Dockerfile", "runtime_base": "debian:bookworm-slim"},
    "local-static": {
        "base_dockerfile": "base-local-static.Dockerfile",
        "runtime_base": "durango-local/lean:1",
    },
}
