"""The logic that decides what rebuilds and what a user is told, without an engine: the one
Dockerfile reader, command detection, keys and `why` reasons against a fake engine, build
failure summaries, the dependency step's report, the extension check. Milliseconds each."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tasks.build.content import ContextFile
from tasks.build.embed import dependency_report, repository_definition
from tasks.build.image_stage import (
    INPUTS_LABEL,
    KEY_LABEL,
    ImageInputs,
    image_status,
    reason_to_build,
)
from tasks.build.verify import check_extensions
from tasks.core.errors import ConfigError, FormatError, VerifyError
from tasks.core.pipeline import doit_command
from tasks.core.ports import ImageInfo
from tasks.engine.buildx import summarize_build_failure
from tasks.engine.images import image_info
from tasks.formats import dockerfile
from tasks.formats.elf import linkage

# --- the Dockerfile reader ------------------------------------------------------------------


def test_from_with_a_flag_and_a_line_continuation_names_the_image() -> None:
    text = "ARG B=base:1\nFROM --platform=linux/amd64 \\\n    ${B} AS build\nFROM build\n"
    assert dockerfile.from_images(text, {}) == ["base:1"]
    assert dockerfile.from_images(text, {"B": "other:2"}) == ["other:2"]


def test_from_skips_stages_and_scratch_and_substitutes_defaults() -> None:
    text = "FROM ${IMG:-debian:12} AS one\nFROM one\nFROM scratch\nFROM $OTHER\n"
    assert dockerfile.from_images(text, {"OTHER": "alpine:3.23"}) == ["debian:12", "alpine:3.23"]


def test_comments_inside_a_continuation_are_dropped() -> None:
    text = "RUN a \\\n# a comment\n    && b\nCOPY x y /z/\n"
    assert dockerfile.logical_lines(text) == ["RUN a && b", "COPY x y /z/"]


def test_copy_sources_in_shell_and_json_form_and_from_other_stages() -> None:
    text = (
        "COPY --chown=1:1 a.sh b/ /dst/\n"
        'ADD ["c d.txt", "/dst/"]\n'
        "COPY --from=build /out /out\n"
        "COPY \\\n    e.ini /etc/\n"
    )
    assert dockerfile.copied_sources(text) == ["a.sh", "b", "c d.txt", "e.ini"]


def test_a_bind_mount_of_the_context_may_read_anything() -> None:
    assert dockerfile.copied_sources("RUN --mount=type=bind,target=/src make\n") is None
    secret = "RUN --mount=type=secret,id=composer_auth install-deps /x\nCOPY a /a\n"
    assert dockerfile.copied_sources(secret) == ["a"]


def test_escape_directive_changes_the_continuation_character() -> None:
    text = "# escape=`\nFROM img\nRUN a `\n  b\n"
    assert dockerfile.logical_lines(text) == ["FROM img", "RUN a b"]


# --- which doit command runs (read-only commands never wait for the checkout lock) ----------


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["doit"], "run"),
        (["doit", "embed"], "run"),
        (["doit", "-n", "2", "list"], "list"),
        (["doit", "--backend", "json", "list"], "list"),
        (["doit", "info", "embed", "ref=v2"], "info"),
        (["doit", "ref=v2", "forget", "base"], "forget"),
    ],
)
def test_doit_command_skips_option_values(argv: list[str], command: str) -> None:
    assert doit_command(argv) == command


# --- keys and reasons against a fake engine ---------------------------------------------------


class FakeEngine:
    """Images by reference: what `Engine.image` answers."""

    def __init__(self, images: dict[str, ImageInfo]) -> None:
        self.images = images

    def image(self, ref: str) -> ImageInfo | None:
        return self.images.get(ref)


def inputs(tmp_path: Path, content: str = "v1", arg: str = "1") -> ImageInputs:
    path = tmp_path / "f.txt"
    path.write_text(content)
    return ImageInputs(
        stage="embed",
        name="app",
        dockerfile="Dockerfile",
        files=[ContextFile("f.txt", path)],
        digests={"f.txt": content},
        build_args={"A": arg},
        upstream={"base image": "sha256:" + "1" * 64},
    )


def built_as(made: ImageInputs, tags: list[str]) -> ImageInfo:
    labels = {KEY_LABEL: made.key, INPUTS_LABEL: json.dumps(made.described())}
    return ImageInfo("sha256:" + "a" * 64, tuple(tags), labels)


def test_key_depends_on_content_args_and_upstream_only(tmp_path: Path) -> None:
    one = inputs(tmp_path)
    assert one.key == inputs(tmp_path).key
    assert one.key != inputs(tmp_path, content="v2").key
    assert one.key != inputs(tmp_path, arg="2").key
    assert one.tag == f"app:{one.key[:12]}"


def test_built_and_latest_is_up_to_date(tmp_path: Path) -> None:
    made = inputs(tmp_path)
    image = built_as(made, [made.tag, "app:latest"])
    engine = FakeEngine({made.tag: image, "app:latest": image})
    assert reason_to_build(engine, made) is None


def test_built_but_latest_elsewhere_is_a_retag(tmp_path: Path) -> None:
    made = inputs(tmp_path)
    engine = FakeEngine({made.tag: built_as(made, [made.tag])})
    status = image_status(engine, made)
    assert status.plan == "retag" and "latest points elsewhere" in status.reason


def test_latest_with_the_key_but_no_key_tag_is_a_retag_not_a_build(tmp_path: Path) -> None:
    made = inputs(tmp_path)
    engine = FakeEngine({"app:latest": built_as(made, ["app:latest"])})
    status = image_status(engine, made)
    assert status.plan == "retag" and status.image_id == "sha256:" + "a" * 64


def test_reason_names_what_changed_since_latest(tmp_path: Path) -> None:
    old = inputs(tmp_path)
    engine = FakeEngine({"app:latest": built_as(old, [old.tag, "app:latest"])})
    new = inputs(tmp_path, content="v2", arg="2")
    reason = reason_to_build(engine, new)
    assert reason is not None
    assert "changed since app:latest: f.txt changed, build arg A" in reason


def test_nothing_built_yet_says_so(tmp_path: Path) -> None:
    assert "no app image built yet" in str(reason_to_build(FakeEngine({}), inputs(tmp_path)))


def test_an_image_without_labels_is_not_taken_for_built(tmp_path: Path) -> None:
    made = inputs(tmp_path)
    bare = image_info({"Id": "sha256:x", "RepoTags": [made.tag], "Config": None})
    assert image_status(FakeEngine({made.tag: bare}), made).plan == "build"


# --- what a user is told ----------------------------------------------------------------------


def test_a_failed_build_names_the_step_and_its_log() -> None:
    lines = [
        "#5 [2/3] RUN make",
        "#5 0.101 cc -c x.c",
        "#5 0.202 x.c:1: error: boom",
        '#5 ERROR: process "/bin/sh -c make" did not complete successfully: exit code: 2',
    ]
    summary = summarize_build_failure("base", lines)
    assert summary.startswith("base: build step [2/3] RUN make failed: process")
    assert "    | x.c:1: error: boom" in summary


def test_dependency_report_tells_reused_from_installed() -> None:
    step = "#9 [3/8] RUN --mount=type=secret,id=composer_auth install-deps /go/src/deps"
    assert dependency_report([step, "#9 CACHED"]) == [
        "dependencies reused (composer.json, composer.lock and the base unchanged)"
    ]
    ran = [step, "#9 1.20 deps: composer install: 27 packages in 3s", "#9 DONE 3.4s"]
    assert dependency_report(ran) == ["deps: composer install: 27 packages in 3s"]
    assert dependency_report(["#1 [1/1] FROM x"]) == []


def test_composer_repository_kinds(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "a-1.0.zip").write_bytes(b"zip")
    assert repository_definition(str(artifacts), tmp_path)[0]["type"] == "artifact"
    single = tmp_path / "pkg"
    single.mkdir()
    (single / "composer.json").write_text("{}")
    assert repository_definition("pkg", tmp_path) == (
        {"type": "path", "url": "/go/src/deps/repository"},
        single,
    )
    url = "https://satis.example.invalid"
    assert repository_definition(url, tmp_path) == ({"type": "composer", "url": url}, None)
    with pytest.raises(ConfigError, match="no such folder"):
        repository_definition("missing", tmp_path)


def test_the_extension_check_wants_exactly_the_configured_set() -> None:
    core = ["core", "date", "frankenphp", "hash", "json", "pcre", "random", "spl", "standard"]
    check_extensions([*core, "libxml", "mysqlnd", "mysqli", "xml"], ["mysqli", "xml"])
    with pytest.raises(VerifyError, match="lacks configured extension"):
        check_extensions([*core, "xml"], ["mysqli", "xml"])
    with pytest.raises(VerifyError, match="redis that php_extensions does not list"):
        check_extensions([*core, "redis", "xml"], ["xml"])


def elf(needed: list[str], interpreter: str = "") -> bytes:
    """A minimal 64-bit ELF: one PT_LOAD over the file, optional PT_INTERP and PT_DYNAMIC."""
    strings = b"\0" + b"".join(n.encode() + b"\0" for n in needed)
    interp = interpreter.encode() + b"\0" if interpreter else b""
    headers = 1 + bool(interp) + bool(needed)
    data_at = 64 + 56 * headers
    dynamic_at = data_at + len(strings) + len(interp)
    offsets, at = [], 1
    for name in needed:
        offsets.append(at)
        at += len(name) + 1
    dynamic = b"".join(struct.pack("<qQ", 1, o) for o in offsets)  # DT_NEEDED
    dynamic += struct.pack("<qQ", 5, data_at) + struct.pack("<qQ", 0, 0)  # DT_STRTAB, DT_NULL
    body = strings + interp + (dynamic if needed else b"")
    size = data_at + len(body)
    header = (
        b"\x7fELF\x02\x01\x01"
        + b"\0" * 9
        + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 0, 0, 64, 56, headers, 0, 0, 0)
    )
    programs = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, size, size, 4096)  # PT_LOAD at vaddr 0
    if interp:
        at = data_at + len(strings)
        programs += struct.pack("<IIQQQQQQ", 3, 4, at, at, at, len(interp), len(interp), 1)
    if needed:
        programs += struct.pack("<IIQQQQQQ", 2, 6, dynamic_at, dynamic_at, dynamic_at,
                                len(dynamic), len(dynamic), 8)  # fmt: skip
    return header + programs + body


def test_linkage_tells_static_from_dynamic_binaries(tmp_path: Path) -> None:
    static, dynamic = tmp_path / "static", tmp_path / "dynamic"
    static.write_bytes(elf([]))
    dynamic.write_bytes(elf(["libpq.so.5", "libc.so.6"], "/lib64/ld-linux-x86-64.so.2"))
    assert linkage(static) == {"static": True, "interpreter": "", "needed": []}
    assert linkage(dynamic)["needed"] == ["libpq.so.5", "libc.so.6"]
    assert linkage(dynamic)["static"] is False
    with pytest.raises(FormatError):
        linkage(Path(__file__))
