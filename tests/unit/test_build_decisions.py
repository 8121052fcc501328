"""The build stages' decisions without the engine: the incremental archive (a real git repository
in a temp folder), what the runtime context may hold, the embedded configuration, the lock's
download locations, and the app's facts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
from fakes import FakeContainers, FakeImages

from tasks.build import archive, extract, runtime
from tasks.core.errors import BuildError, ConfigError
from tasks.core.pipeline import Pipeline
from tasks.core.settings import load_settings
from tasks.formats import app_facts, composer_lock

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
}  # fmt: skip


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(repo: Path, files: dict[str, str | None]) -> str:
    for rel, text in files.items():
        path = repo / rel
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "change")
    return git(repo, "rev-parse", "HEAD")


def project(tmp_path: Path, app: Path, facts: Path | None = None, **settings: str) -> Pipeline:
    root = tmp_path / "project"
    (root / "builder").mkdir(parents=True, exist_ok=True)
    (root / "orangescrum-ee").mkdir(exist_ok=True)
    values = {"source": str(app), "app_facts": str(facts or tmp_path / "none.toml"), **settings}
    return Pipeline(load_settings(root, values, {}), FakeImages(), FakeContainers())


@pytest.fixture
def app(tmp_path: Path) -> Path:
    repo = tmp_path / "app"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"webroot/index.php": "<?php echo 1;\n", "src/A.php": "a", "src/B.php": "b"})
    return repo


# --- archive ---------------------------------------------------------------------------------


def test_a_new_commit_rewrites_only_what_changed(tmp_path: Path, app: Path) -> None:
    pipe = project(tmp_path, app, docroot="src")
    archive.run(pipe)
    package = pipe.settings.package_dir
    untouched = (package / "src" / "A.php").stat().st_ino
    commit(app, {"src/B.php": "b2", "src/C.php": "c", "webroot/index.php": None})
    pipe.memo.clear()
    archive.run(pipe)
    assert (package / "src" / "A.php").stat().st_ino == untouched  # not written again
    assert (package / "src" / "B.php").read_text() == "b2"
    assert (package / "src" / "C.php").read_text() == "c"
    assert not (package / "webroot").exists()  # emptied folders go with their last file
    tree = git(app, "rev-parse", "HEAD^{tree}")
    assert archive.content_key(pipe) == f"tree:{tree}"
    assert archive.why(pipe) is None


def test_an_edited_package_is_rewritten_whole_and_matches_git_again(
    tmp_path: Path, app: Path
) -> None:
    pipe = project(tmp_path, app)
    archive.run(pipe)
    (pipe.settings.package_dir / "src" / "A.php").write_text("edited by hand")
    (pipe.settings.package_dir / "stray.txt").write_text("x")
    pipe.memo.clear()
    assert archive.why(pipe) == "package/ was modified since it was archived"
    archive.run(pipe)
    assert (pipe.settings.package_dir / "src" / "A.php").read_text() == "a"
    assert not (pipe.settings.package_dir / "stray.txt").exists()


def test_export_attributes_make_git_archive_the_only_way(tmp_path: Path, app: Path) -> None:
    commit(app, {".gitattributes": "src/B.php export-ignore\n"})
    pipe = project(tmp_path, app)
    archive.run(pipe)
    assert not (pipe.settings.package_dir / "src" / "B.php").exists()
    assert archive.content_key(pipe).startswith("archive:")


def test_executable_bits_and_symlinks_come_from_git(tmp_path: Path, app: Path) -> None:
    (app / "bin").mkdir()
    (app / "bin" / "run").write_text("#!/bin/sh\n")
    (app / "bin" / "run").chmod(0o755)
    os.symlink("run", app / "bin" / "alias")
    commit(app, {})
    pipe = project(tmp_path, app)
    archive.run(pipe)
    commit(app, {"bin/other": "x"})
    pipe.memo.clear()
    archive.run(pipe)  # incremental: the new file; the old ones as git has them
    package = pipe.settings.package_dir
    assert os.access(package / "bin" / "run", os.X_OK)
    assert os.readlink(package / "bin" / "alias") == "run"
    assert not os.access(package / "bin" / "other", os.X_OK)


# --- the runtime context ---------------------------------------------------------------------


def runtime_pipe(tmp_path: Path, app: Path, dockerfile: str) -> Pipeline:
    pipe = project(tmp_path, app)
    bundle = pipe.settings.bundle_dir
    (bundle / "Dockerfile").write_text(dockerfile)
    (bundle / "entrypoint.sh").write_text("#!/bin/sh\n")
    (bundle / ".env").write_text("DB_PASSWORD=canary-3f1\n")
    (bundle / "tenants").mkdir()
    (bundle / "tenants" / "acme.env").write_text("DB_PASSWORD=canary-3f2\n")
    return pipe


def test_the_runtime_context_is_what_the_dockerfile_copies(tmp_path: Path, app: Path) -> None:
    pipe = runtime_pipe(
        tmp_path, app, "FROM x\nCOPY entrypoint.sh /e\nCOPY app-facts.sh health-path /f/\n"
    )
    names = sorted(
        f.arcname
        for f in runtime.allowed_files(pipe, (pipe.settings.bundle_dir / "Dockerfile").read_text())
    )
    assert names == ["Dockerfile", "app-facts.sh", "entrypoint.sh", "health-path"]


@pytest.mark.parametrize(
    ("copy", "message"),
    [("COPY . /app", "copies the whole bundle folder"), ("COPY tenants/ /t", "never enters")],
)
def test_a_runtime_dockerfile_that_would_send_secrets_is_refused(
    tmp_path: Path, app: Path, copy: str, message: str
) -> None:
    pipe = runtime_pipe(tmp_path, app, f"FROM x\n{copy}\n")
    with pytest.raises(BuildError, match=message):
        runtime.allowed_files(pipe, (pipe.settings.bundle_dir / "Dockerfile").read_text())


# --- the embedded configuration ----------------------------------------------------------------


FACTS = """
[app]
console = "bin/cake.php"
[paths]
"webroot/files" = { data = "uploads" }
"webroot/csv" = { data = "files/csv" }
"tmp" = { data = "files/tmp" }
"config/app_local.php" = { data = "files/config/app_local.php", kind = "file" }
[php]
ini = "config/limits.ini"
"""


CADDYFILE = """:80 {
\troot webroot
\t@u path_regexp u ^(WRITABLE_WEB_PATHS)/
\thandle {
\t\tphp_server {
\t\t\troot webroot
\t\t}
\t}
}
"""


def config_pipe(tmp_path: Path, app: Path, docroot: str = "webroot") -> Pipeline:
    tmp_path.mkdir(parents=True, exist_ok=True)
    facts = tmp_path / "facts.toml"
    facts.write_text(FACTS)
    pipe = project(tmp_path, app, facts, docroot=docroot)
    builder = pipe.settings.builder_dir
    (builder / "Caddyfile").write_text(CADDYFILE)
    (builder / "php.ini").write_text("memory_limit = 512M\n")
    (builder / "app-path.php").write_text("<?php\n")
    (pipe.settings.package_dir / "config").mkdir(parents=True)
    (pipe.settings.package_dir / "config" / "limits.ini").write_text(
        'memory_limit = 1G\nsession.save_path = "/tmp"\n'
    )
    return pipe


def test_the_caddyfile_gets_the_docroot_and_the_writable_web_paths(
    tmp_path: Path, app: Path
) -> None:
    text = extract.caddyfile(config_pipe(tmp_path, app, docroot="webroot")).decode()
    assert text.count("root webroot") == 2
    assert r"^(/files|/csv)/" in text  # tmp/ is not under the web root: not served at all
    public = extract.caddyfile(config_pipe(tmp_path / "p", app, docroot="public")).decode()
    assert public.count("root public") == 2 and "root webroot" not in public


def test_the_php_ini_is_production_then_ours_then_the_apps_then_our_sessions(
    tmp_path: Path, app: Path
) -> None:
    text = extract.php_ini(
        config_pipe(tmp_path, app), b"; production\nzend.assertions = -1\n"
    ).decode()
    order = [text.index(s) for s in ("; production", "memory_limit = 512M", "memory_limit = 1G")]
    assert order == sorted(order)
    assert text.rstrip().endswith('session.save_path = "${FRANKENPHP_SESSION_DIR}"')


def test_the_links_file_carries_every_writable_path(tmp_path: Path, app: Path) -> None:
    entries = {e.arcname: e for e in extract.config_entries(config_pipe(tmp_path, app), b"")}
    links = entries[".frankenphp/links"].source
    assert isinstance(links, bytes)
    assert b"config/app_local.php\tfiles/config/app_local.php\tfile" in links
    assert b"webroot/files\tuploads\tdir" in links


def test_a_missing_embedded_file_is_one_line(tmp_path: Path, app: Path) -> None:
    pipe = config_pipe(tmp_path, app)
    (pipe.settings.builder_dir / "app-path.php").unlink()
    with pytest.raises(BuildError, match=r"builder/app-path\.php is missing"):
        extract.config_entries(pipe, b"")


# --- composer.lock pointed at a repository -------------------------------------------------------


def make_zip(folder: Path, name: str, version: str, top: str = "pkg-abc/") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('/', '-')}-{version}.zip"
    with zipfile.ZipFile(path, "w") as archive_file:
        archive_file.writestr(f"{top}composer.json", json.dumps({"version": version, "name": name}))
        archive_file.writestr(f"{top}src/X.php", "<?php\n")
    return path


LOCK = {
    "content-hash": "abc",
    "packages": [
        {"name": "acme/one", "version": "v1.2.0",
         "source": {"type": "git", "url": "https://github.com/acme/one.git", "reference": "r1"},
         "dist": {"type": "zip", "url": "https://api.github.com/x", "reference": "r1"}},
        {"name": "acme/two", "version": "2.0.1",
         "dist": {"type": "zip", "url": "https://api.github.com/y", "reference": "r2"}},
    ],
    "packages-dev": [{"name": "acme/dev", "version": "1.0.0"}],
}  # fmt: skip


def test_the_lock_points_at_the_artifact_zips_keeping_versions_and_references(
    tmp_path: Path,
) -> None:
    make_zip(tmp_path / "repo", "acme/one", "1.2.0")  # "v1.2.0" and "1.2.0" are one version
    make_zip(tmp_path / "repo", "acme/two", "2.0.1")
    index = composer_lock.artifact_index(tmp_path / "repo", "/deps/repository")
    out = json.loads(composer_lock.rewrite(json.dumps(LOCK), index, "repo"))
    one, two = out["packages"]
    assert one["dist"]["url"] == "/deps/repository/acme-one-1.2.0.zip"
    assert one["dist"]["reference"] == "r1" and len(one["dist"]["shasum"]) == 40
    assert "source" not in one and two["version"] == "2.0.1"
    assert out["content-hash"] == "abc" and out["packages-dev"] == LOCK["packages-dev"]


def test_a_package_the_repository_lacks_is_named_with_what_to_do(tmp_path: Path) -> None:
    make_zip(tmp_path / "repo", "acme/one", "v1.2.0")
    index = composer_lock.artifact_index(tmp_path / "repo", "/r")
    with pytest.raises(ConfigError, match=r"needs acme/two 2.0.1, which composer_repository repo"):
        composer_lock.rewrite(json.dumps(LOCK), index, "repo")


def test_a_path_repository_is_copied_not_linked(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / "repo" / name).mkdir(parents=True)
        (tmp_path / "repo" / name / "composer.json").write_text(
            json.dumps({"name": f"acme/{name}"})
        )
    index = composer_lock.path_index(tmp_path / "repo", "/r")
    out = json.loads(composer_lock.rewrite(json.dumps(LOCK), index, "repo"))
    assert out["packages"][0]["dist"] == {"type": "path", "url": "/r/one", "reference": "r1"}
    assert out["packages"][0]["transport-options"] == {"symlink": False, "relative": False}


REPO_URL = "https://repo.example"


def test_a_composer_repository_url_is_read_from_its_minified_metadata() -> None:
    pages = {
        "https://repo.example/packages.json": {"metadata-url": "/p2/%package%.json"},
        "https://repo.example/p2/acme/one.json": {
            "minified": "composer/2.0",
            "packages": {"acme/one": [
                {"name": "acme/one", "version": "v1.3.0",
                 "dist": {"type": "zip", "url": f"{REPO_URL}/one-1.3.zip", "shasum": "s13"}},
                {"version": "v1.2.0",
                 "dist": {"type": "zip", "url": f"{REPO_URL}/one-1.2.zip", "shasum": "s12"}},
            ]},
        },
        "https://repo.example/p2/acme/two.json": {
            "packages": {"acme/two": [{"version": "2.0.1", "dist": {"type": "zip", "url": "https://repo.example/two.zip"}}]},
        },
    }  # fmt: skip
    asked: list[str] = []

    def fetch(url: str) -> bytes:
        asked.append(url)
        if url not in pages:
            raise OSError("404")
        return json.dumps(pages[url]).encode()

    index = composer_lock.metadata_index(fetch, "https://repo.example", ["acme/one", "acme/two"])
    out = json.loads(composer_lock.rewrite(json.dumps(LOCK), index, "https://repo.example"))
    assert out["packages"][0]["dist"]["url"] == "https://repo.example/one-1.2.zip"
    assert out["packages"][0]["dist"]["shasum"] == "s12"
    assert asked[0] == "https://repo.example/packages.json"


# --- the app's facts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nope]\n", "unknown table(s) nope"),
        ('[app]\nconsole = "../x"\n', "not a clean path inside the app"),
        ('[migrations]\nplugins = ["Bad Name"]\n', "is not a plugin name"),
        ('[seed]\nsentinel_table = "x; drop"\n', "is not a table name"),
        ('[app]\nconsole = "c"\n[jobs.a]\nschedule = "* * *"\ncommand = "x"\n', "needs 5 fields"),
        ('[app]\nconsole = "c"\n[jobs.a]\nschedule = "61 * * * *"\ncommand = "x"\n', "minute '61'"),
        ('[jobs.a]\nschedule = "* * * * *"\ncommand = "x"\n', "[jobs] need app.console"),
        ('[paths]\n"logs" = { data = "x", kind = "pipe" }\n', "kind must be dir or file"),
        ('[programs]\nexec = ["rm -rf /"]\n', "is not a program name"),
        ('[local_config]\ntemplate = "t.php"\n', "needs both template and output"),
        ('[app]\nhealth_path = "users/login"\n', "must be a URL path starting with /"),
    ],
)
def test_facts_that_cannot_work_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        app_facts.parse(text, "app.toml")


def test_facts_are_checked_against_the_archived_app(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "cake.php").write_text("<?php\n")
    found = app_facts.parse(
        '[app]\nconsole = "bin/cake.php"\n[local_config]\ntemplate = "config/t.php"\n'
        'output = "config/o.php"\n'
    )
    with pytest.raises(
        ConfigError, match=re.escape("local_config.template 'config/t.php' is not a file")
    ):
        app_facts.check_against_app(found, tmp_path, "app.toml")
    plugin = app_facts.parse('[app]\nconsole = "bin/cake.php"\n[migrations]\nplugins = ["Gone"]\n')
    with pytest.raises(ConfigError, match="names 'Gone', but the app has no plugins/Gone"):
        app_facts.check_against_app(plugin, tmp_path, "app.toml")


def test_the_shell_form_quotes_every_value(tmp_path: Path) -> None:
    found = app_facts.parse(
        '[app]\nconsole = "bin/cake.php"\n[jobs.q]\nschedule = "* * * * *"\n'
        'command = "queue worker --name \'x y\'"\n[environment]\nFULL_BASE_URL = "{app_url}"\n'
    )
    script = tmp_path / "facts.sh"
    script.write_bytes(app_facts.shell(found))
    done = subprocess.run(
        ["sh", "-c", f'. "{script}"; printf "%s\\n" "$FACT_APP_JOBS" "$FACT_ENV_FULL_BASE_URL"'],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.splitlines() == ["q|* * * * *|0|queue worker --name 'x y'", "{app_url}"]


def test_the_bundled_facts_parse_and_describe_orangescrum() -> None:
    found = app_facts.load(Path(__file__).resolve().parents[2] / "orangescrum-ee" / "app.toml")
    assert found.config_output == "config/app_local.php" and found.sentinel_table == "actions"
    assert {j.name for j in found.jobs} == {"queue-worker", "recurring-task"}
    assert set(found.programs) == {"convert", "wkhtmltopdf"}
    assert found.plugins is None  # discovered
