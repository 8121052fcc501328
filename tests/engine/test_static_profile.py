"""The upstream static profile cannot run here (its builder image and downloads need the
internet), so it must be right by construction: the link relink-static.sh would run is rendered
with a stand-in for spc and compared, element by element, with the link upstream's build runs
(tests/fixtures/upstream/, taken from FrankenPHP v1.12.7 and static-php-cli 3ce68b64, cited
there). The dependency pack must work with the gnu builder's GNU tar 1.26."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from pathlib import Path

import docker
import pytest
from helpers import LOCAL_IMAGES, REPO

UPSTREAM = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"
INCLUDES = "-I<B>/include -I<B>/include/php -I<B>/include/php/main"


def fixture(name: str) -> dict[str, list[str]]:
    """The fixture's `key=value` lines (comments dropped); X may repeat."""
    found: dict[str, list[str]] = {}
    for line in (UPSTREAM / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def fake_spc(tmp: Path) -> Path:
    """A stand-in for spc's `spc-config` (what it prints for the default list) and php-config."""
    buildroot = tmp / "spc" / "buildroot"
    (buildroot / "bin").mkdir(parents=True)
    libs = (UPSTREAM / "spc-config-libs.txt").read_text().strip().replace("<B>", str(buildroot))
    spc = tmp / "spc" / "spc"
    spc.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *--includes*) echo "{INCLUDES.replace("<B>", str(buildroot))}" ;;\n'
        f'  *--libs*) echo "{libs}" ;; esac\n'
    )
    php_config = buildroot / "bin" / "php-config"
    php_config.write_text("#!/bin/sh\necho 8.3.27\n")
    for script in (spc, php_config):
        script.chmod(0o755)
    return tmp / "spc"


def render(tmp: Path, libc: str) -> dict[str, list[str]]:
    """What relink-static.sh --print says it would run, as fixture-style keys."""
    spc_dir = fake_spc(tmp)
    (tmp / "build").mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "SPC_DIR": str(spc_dir),
        "SPC_LIBC": libc,
        "PHP_EXTENSIONS": "bcmath,curl,opcache,pdo_pgsql",
        "PHP_EXTENSION_LIBS": "freetype,libjpeg,libwebp,libavif",
        "FRANKENPHP_VERSION": "1.12.7",
        "FRANKENPHP_SRC": str(tmp),
        "FRANKENPHP_BUILD": str(tmp / "build"),
    }
    out = subprocess.run(
        ["sh", str(REPO / "builder" / "relink-static.sh"), "--print", "/out/frankenphp"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.replace(str(spc_dir / "buildroot"), "<B>")  # fmt: skip
    lines = out.splitlines()
    rendered = {k: [v] for k, _, v in (line.partition("=") for line in lines[:3])}
    words = shlex.split(lines[3])
    ldflags = shlex.split(words[words.index("-ldflags") + 1])
    rendered["buildmode"] = [w.split("=", 1)[1] for w in words if w.startswith("-buildmode=")]
    rendered["linkmode"] = [w.split("=", 1)[1] for w in ldflags if w.startswith("-linkmode=")]
    rendered["extldflags"] = [ldflags[ldflags.index("-extldflags") + 1]]
    rendered["X"] = [ldflags[i + 1] for i, w in enumerate(ldflags) if w == "-X"]
    rendered["tags"] = [w.split("=", 1)[1] for w in words if w.startswith("-tags=")]
    rendered["pgo"] = [w.split("=", 1)[1] for w in words if w.startswith("-pgo=")]
    return rendered


@pytest.mark.parametrize("libc", ["musl", "gnu"])
def test_relink_renders_the_link_upstream_runs(tmp_path: Path, libc: str) -> None:
    upstream = fixture(f"link-{libc}.txt")
    ours = render(tmp_path, "musl" if libc == "musl" else "glibc")
    libs = (UPSTREAM / "spc-config-libs.txt").read_text().strip()
    expected = {
        key: [
            v.replace("<INCLUDES>", INCLUDES).replace("<SPC_LIBS>", libs)
            .replace("<PHP_VERSION>", "8.3.27")
            for v in values
        ]
        for key, values in upstream.items()
    }  # fmt: skip
    for key in ("CGO_ENABLED", "CGO_CFLAGS", "CGO_LDFLAGS", "buildmode", "linkmode"):
        assert ours[key] == expected[key], key
    assert ours["extldflags"] == expected["extldflags"]
    assert ours["tags"] == expected["tags"]
    assert ours["pgo"] == expected["pgo"]
    # upstream's three -X, nothing else: the app is appended to the binary, not linked in
    assert ours["X"] == expected["X"]


def test_the_dependency_pack_needs_nothing_newer_than_gnu_tar_1_26(
    tmp_path: Path, engine: docker.DockerClient, local_build: object
) -> None:
    """pack-deps.sh with a tar that refuses options GNU tar 1.26 (the gnu builder's) lacks
    gives the same deps.tar."""
    deps = tmp_path / "deps"
    (deps / "vendor" / "acme" / "lib").mkdir(parents=True)
    (deps / "vendor" / "acme" / "lib" / "Lib.php").write_text("<?php // lib\n")
    (deps / "composer.json").write_text(
        '{"name": "acme/app", "autoload": {"psr-4": {"A\\\\": "src/"}}}'
    )
    strict_tar = (
        "#!/bin/sh\ntouch /work/strict/used\n"
        'for a in "$@"; do case "$a" in --sort*|--clamp-mtime|--zstd|--pax-option*)\n'
        '  echo "tar 1.26: unrecognized option $a" >&2; exit 64;; esac; done\n'
        'exec /usr/bin/tar "$@"\n'
    )
    script = """set -e
mkdir -p /work/strict
printf '%s' "$STRICT" > /work/strict/tar && chmod +x /work/strict/tar
for strict in "" /work/strict; do
    rm -rf /tmp/deps && cp -a /deps /tmp/deps
    PATH="${strict:+$strict:}$PATH" sh /src/builder/pack-deps.sh /tmp/deps /tmp/deps.tar > /dev/null
    sha256sum /tmp/deps.tar
done
test -e /work/strict/used
"""
    output = engine.containers.run(
        f"{LOCAL_IMAGES}-base:latest",
        ["sh", "-c", script],
        environment={"STRICT": strict_tar},
        volumes={
            str(deps): {"bind": "/deps", "mode": "ro"},
            str(REPO): {"bind": "/src", "mode": "ro"},
        },
        remove=True,
    ).decode()
    normal, strict = [line.split()[0] for line in output.splitlines() if len(line.split()) == 2]
    assert normal == strict
    assert len(normal) == len(hashlib.sha256().hexdigest())
