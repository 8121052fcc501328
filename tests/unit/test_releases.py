"""The decisions of releases, without an engine: the records (read, written, what serves), where
a rollback goes and when it is refused (and which backup it names), which images prune keeps,
which migrations a release ships, and the proxy's configuration and runtime answers."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.core.errors import ConfigError, FormatError
from tasks.core.pipeline import Pipeline
from tasks.core.settings import load_settings
from tasks.deploy.releases import images_to_keep, shipped_migrations, snake
from tasks.formats import app_facts, haproxy, releases
from tasks.formats.releases import (
    FAILED_HEALTH,
    FAILED_MIGRATIONS,
    RETIRED,
    ROLLED_BACK,
    SERVING,
    Records,
    Release,
)

APP = {"phinxlog": ("20240101000000", "20240102000000"), "gitsync_phinxlog": ("20240201000000",)}


def release(key: str, when: str, status: str = RETIRED, **more: object) -> Release:
    return Release(
        key=key,
        image=f"app:{key}",
        image_id=f"sha256:{key}",
        attempted=when,
        deployed=when if not status.startswith("failed") else "",
        status=status,
        migrations=more.pop("migrations", APP),  # type: ignore[arg-type]
        **more,  # type: ignore[arg-type]
    )


def get(records: Records, key: str) -> Release:
    found = records.find(key)
    assert found is not None, key
    return found


def history() -> Records:
    """a (retired) -> b (retired) -> c (serving); d failed its migrations in between."""
    return Records(
        "p",
        (
            release("aaaaaaaaaaaa", "2026-01-01T00:00:00+00:00", backup="b-a"),
            release("bbbbbbbbbbbb", "2026-01-02T00:00:00+00:00", backup="b-b"),
            release("dddddddddddd", "2026-01-02T12:00:00+00:00", FAILED_MIGRATIONS, backup="b-d"),
            release("cccccccccccc", "2026-01-03T00:00:00+00:00", SERVING, backup="b-c"),
        ),
    )


# --- the records ------------------------------------------------------------------------------


def test_records_round_trip_through_their_file(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    releases.save(path, history())
    assert releases.load(path, "p") == history()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert releases.load(tmp_path / "none.json", "p") == Records("p")


@pytest.mark.parametrize(
    "text",
    ["not json", '{"tool": "other"}', '{"tool": "durango-releases/1", "releases": [{"x": 1}]}'],
)
def test_a_damaged_record_is_one_format_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(FormatError, match=str(path)):
        releases.load(path, "p")


def test_going_live_retires_the_one_that_served() -> None:
    records = history()
    newer = release("eeeeeeeeeeee", "2026-01-04T00:00:00+00:00", "failed")
    after = records.put(newer).went_live(newer, "2026-01-04T00:01:00+00:00")
    assert after.serving() == replace(
        newer, status=SERVING, deployed="2026-01-04T00:01:00+00:00", note=""
    )
    assert get(after, "cccc").status == RETIRED
    assert [r.key[0] for r in after.releases] == ["a", "b", "d", "c", "e"]


def test_put_replaces_an_entry_in_place() -> None:
    records = history().put(release("bbbbbbbbbbbb", "2026-01-05T00:00:00+00:00", note="x"))
    assert [r.key[0] for r in records.releases] == ["a", "b", "d", "c"]
    assert get(records, "bbbb").note == "x"


def test_the_listing_is_newest_first_with_commit_time_and_status() -> None:
    rows = releases.table_rows(history())
    assert [(r[0][0], r[3]) for r in rows] == [
        ("c", SERVING), ("d", FAILED_MIGRATIONS), ("b", RETIRED), ("a", RETIRED),
    ]  # fmt: skip
    assert rows[0][2] == "2026-01-03 00:00:00"


# --- where a rollback goes --------------------------------------------------------------------


def test_rollback_goes_to_the_newest_release_that_served_before() -> None:
    target = releases.rollback_target(history())
    assert isinstance(target, Release) and target.key.startswith("b")


def test_rollback_to_a_key_prefix() -> None:
    target = releases.rollback_target(history(), "aaaa")
    assert isinstance(target, Release) and target.key.startswith("a")


@pytest.mark.parametrize(
    ("to", "says"),
    [
        ("zzzz", "no release 'zzzz'"),
        ("aa", "no release 'aa'"),  # too short to be taken for a key
        ("cccc", "is the one serving"),
        ("dddd", "never served (failed: migrations)"),
    ],
)
def test_rollback_to_an_unusable_key_says_why(to: str, says: str) -> None:
    answer = releases.rollback_target(history(), to)
    assert isinstance(answer, str) and says in answer


def test_rollback_with_no_earlier_release_says_so() -> None:
    only = Records("p", (release("cccccccccccc", "2026-01-03", SERVING),))
    answer = releases.rollback_target(only)
    assert isinstance(answer, str) and answer.startswith("no earlier release")
    rolled = Records("p", (*only.releases, release("bbbbbbbbbbbb", "2026-01-02", ROLLED_BACK)))
    assert isinstance(releases.rollback_target(rolled), str)
    assert isinstance(releases.rollback_target(rolled, "bbbb"), Release)  # by name it may
    assert "serves" in str(releases.rollback_target(Records("p")))


# --- when a rollback is refused ---------------------------------------------------------------


def test_a_target_that_knows_every_applied_migration_is_allowed() -> None:
    records = history()
    target = records.find("bbbb")
    assert target is not None
    assert releases.rollback_refusal(records, target, APP) is None
    fewer = {"phinxlog": ["20240101000000"]}  # a database behind the target is fine too
    assert releases.rollback_refusal(records, target, fewer) is None


def test_a_target_older_than_the_database_is_refused_naming_the_backup_before_the_change() -> None:
    newer = {**APP, "phinxlog": (*APP["phinxlog"], "20240301000000")}
    records = history()
    records = records.put(replace(get(records, "cccc"), migrations=newer))
    target = records.find("aaaa")
    assert target is not None
    line = releases.rollback_refusal(records, target, newer)
    assert line is not None and "\n" not in line
    assert "phinxlog: 20240301000000" in line
    # c brought the migration: the backup taken just before c migrated is the way back
    assert "doit restore --from b-c --confirm --drop-database" in line


def test_a_failed_release_whose_migrations_ran_counts_too() -> None:
    newer = {"phinxlog": (*APP["phinxlog"], "20240301000000")}
    records = history()
    records = records.put(replace(get(records, "dddd"), migrations=newer))
    target = records.find("bbbb")
    assert target is not None
    line = releases.rollback_refusal(records, target, newer)
    assert line is not None and "--from b-d " in line


def test_a_new_plugin_table_is_a_migration_the_target_does_not_know() -> None:
    records = history()
    target = records.find("bbbb")
    assert target is not None
    applied = {**APP, "billing_phinxlog": ["20250101000000"]}
    line = releases.rollback_refusal(records, target, applied)
    assert line is not None and "billing_phinxlog" in line


def test_a_refusal_with_no_backup_recorded_says_where_to_look() -> None:
    newer = {"phinxlog": (*APP["phinxlog"], "20240301000000")}
    records = history()
    records = records.put(replace(get(records, "cccc"), migrations=newer, backup=""))
    target = records.find("bbbb")
    assert target is not None
    line = releases.rollback_refusal(records, target, newer)
    assert line is not None and "--no-backup" in line and "doit backups" in line
    line = releases.rollback_refusal(Records("p", (target,)), target, newer)
    assert line is not None and "doit backups" in line


# --- prune ------------------------------------------------------------------------------------


def test_prune_keeps_the_serving_release_and_the_newest_that_served() -> None:
    keep = releases.images_to_keep(history(), 1)
    assert keep == {
        "app:cccccccccccc",
        "sha256:cccccccccccc",
        "app:bbbbbbbbbbbb",
        "sha256:bbbbbbbbbbbb",
    }
    assert "app:dddddddddddd" not in releases.images_to_keep(history(), 5)  # never served
    assert len(releases.images_to_keep(history(), 5)) == 6


# --- a release's migrations -------------------------------------------------------------------


def test_a_release_ships_the_versions_of_its_migration_files(tmp_path: Path) -> None:
    for rel in (
        "config/Migrations/20240101000000_CreateActions.sql",
        "config/Migrations/20240102000000_Users.php",
        "config/Migrations/README.md",
        "plugins/GitSync/config/Migrations/20240201000000_Repos.php",
        "plugins/Empty/config/Migrations/.gitkeep",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    facts = app_facts.Facts()
    assert shipped_migrations(tmp_path, facts) == {
        "phinxlog": ("20240101000000", "20240102000000"),
        "git_sync_phinxlog": ("20240201000000",),
    }
    named = replace(facts, plugins=("GitSync",), plugin_migration_table="mig_{plugin}")
    assert shipped_migrations(tmp_path, named)["mig_git_sync"] == ("20240201000000",)


def test_plugin_names_become_log_tables_as_cakephp_names_them() -> None:
    assert snake("Gitsync") == "gitsync"
    assert snake("GitSync") == "git_sync"
    assert snake("Vendor/PluginName") == "vendor_plugin_name"


def test_the_facts_name_the_migration_log_tables() -> None:
    facts = app_facts.parse(
        '[migrations]\nlog_table = "schema_log"\nplugin_log_table = "{plugin}_log"\n'
    )
    assert (facts.migration_table, facts.plugin_migration_table) == ("schema_log", "{plugin}_log")
    for bad in (
        'log_table = "x y"',
        'plugin_log_table = "no_placeholder"',
        'log_table = "{plugin}"',
    ):
        with pytest.raises(ConfigError, match="migrations"):
            app_facts.parse(f"[migrations]\n{bad}\n")


def test_both_facts_files_name_the_tables_the_demo_app_writes() -> None:
    root = Path(__file__).resolve().parents[2]
    for path in (root / "orangescrum-ee" / "app.toml", root / "examples" / "demo-app" / "app.toml"):
        facts = app_facts.load(path)
        assert (facts.migration_table, facts.plugin_migration_table) == (
            "phinxlog",
            "{plugin}_phinxlog",
        )
    demo = root / "examples" / "demo-app"
    shipped = shipped_migrations(demo, app_facts.load(demo / "app.toml"))
    assert set(shipped) == {"phinxlog", "gitsync_phinxlog"} and len(shipped["phinxlog"]) == 3


# --- the proxy --------------------------------------------------------------------------------


def test_the_proxy_restarts_with_the_serving_release_enabled() -> None:
    text = haproxy.render({"blue": "p-app-aaaa", "green": "p-app-bbbb"}, enabled="green")
    assert "    server blue p-app-aaaa:8080 disabled\n" in text
    assert "    server green p-app-bbbb:8080\n" in text
    assert "retry-on conn-failure empty-response" in text and "option redispatch" in text
    empty = haproxy.render({}, enabled="")
    assert empty.count(f"{haproxy.PLACEHOLDER} disabled") == 2
    with pytest.raises(FormatError):
        haproxy.render({"blue": "bad name; rm"}, enabled="blue")


def test_the_committed_empty_configuration_is_the_rendered_one() -> None:
    committed = Path(__file__).resolve().parents[2] / "orangescrum-ee" / "proxy" / "empty.cfg"
    assert committed.read_text().split("\n", 1)[1] == haproxy.render({}, enabled="")


def test_the_swarm_configuration_discovers_tasks_and_checks_the_health_path() -> None:
    text = haproxy.render_swarm("orangescrum-app", "/home/healthcheck", 8)
    assert "server-template task 8 tasks.orangescrum-app:8080" in text
    assert "option httpchk GET /home/healthcheck" in text and "nameserver dns 127.0.0.11:53" in text
    with pytest.raises(FormatError):
        haproxy.render_swarm("orangescrum-app", "no-slash", 8)


def test_runtime_commands_aim_drain_and_retire_a_server() -> None:
    assert haproxy.point("green", "p-app-bbbb", "172.18.0.5") == (
        "set server app/green fqdn p-app-bbbb; set server app/green addr 172.18.0.5 port 8080; "
        "set server app/green state ready"
    )
    assert haproxy.drain("blue") == "set server app/blue state drain"
    assert haproxy.retire("blue") == "set server app/blue state maint"
    with pytest.raises(FormatError):
        haproxy.point("green", "p-app-b; shutdown sessions", "172.18.0.5")
    with pytest.raises(FormatError):
        haproxy.point("green", "p-app-b", "1.2.3.4; shutdown sessions")


STAT = "\n".join(
    [
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
        "wretr,wredis,status,weight,check_status",
        "web,FRONTEND,,,3,5,262124,100,0,0,0,0,0,,,,,OPEN,,",
        "app,blue,0,0,2,4,,50,0,0,,0,,0,0,0,0,DRAIN,1,L4OK",
        "app,green,1,1,0,3,,50,0,0,,0,,0,0,0,0,UP 1/2,1,* INI",
        "app,red,0,0,0,3,,50,0,0,,0,,0,0,0,0,UP,1,L4OK",
        "app,BACKEND,0,0,2,5,26213,100,0,0,0,0,,0,0,0,0,UP,2,",
    ]
)


def test_the_stat_answer_gives_each_servers_state_and_requests() -> None:
    found = haproxy.parse_stat(STAT)
    assert set(found) == {"blue", "green", "red"}
    assert found["blue"] == haproxy.ServerStat("DRAIN", 2, 0, "L4OK") and not found["blue"].up
    assert found["green"].queued == 1
    assert not found["green"].up  # enabled a moment ago: it says UP, but no check has run
    assert found["red"].up
    assert not haproxy.ServerStat("MAINT", 0, 0, "L4OK").up
    with pytest.raises(FormatError):
        haproxy.parse_stat("Unknown command.\n")


def test_release_json_is_what_the_listing_and_rollback_read(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    releases.save(path, history())
    data = json.loads(path.read_text())
    assert data["releases"][0]["migrations"]["phinxlog"] == list(APP["phinxlog"])
    assert {r["status"] for r in data["releases"]} == {RETIRED, SERVING, FAILED_MIGRATIONS}
    assert FAILED_HEALTH in releases.STATUSES


def test_prune_keeps_the_release_images_of_every_project_of_the_checkout(tmp_path: Path) -> None:
    (tmp_path / "orangescrum-ee").mkdir()
    pipe = Pipeline(load_settings(tmp_path, {}, environ={}), None, None)  # type: ignore[arg-type]
    folder = pipe.settings.state_dir / "releases"
    releases.save(folder / "acme.json", history())
    other = Records("beta", (release("ffffffffffff", "2026-02-01", SERVING),))
    releases.save(folder / "beta.json", other)
    keep = images_to_keep(pipe)
    assert {"sha256:cccccccccccc", "sha256:ffffffffffff", "sha256:aaaaaaaaaaaa"} <= keep
    assert "sha256:dddddddddddd" not in keep  # failed: never a rollback target
