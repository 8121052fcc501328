"""The entrypoint under faults, against a real PostgreSQL: a seeding step that fails, a lock
session that dies mid-migration, `docker stop` while waiting for the lock, values that must
never reach SQL. The app is the demo app plus two switches the test flips in the database: a
migration that sleeps while `durango_test_slow` exists, a pg_config_2.sql that fails while
`durango_test_fail_seed` exists."""

from __future__ import annotations

import threading
import time

import docker
import pytest
from docker.models.containers import Container
from helpers import (
    LOCAL_IMAGES,
    Stack,
    Workspace,
    demo_app_repo,
    make_local_project,
    sql,
    wait_exit,
    wait_healthy,
    wait_ready_db,
)

FAULTS = f"{LOCAL_IMAGES}-faults"
SLOW_MIGRATION = (
    "SELECT pg_sleep(CASE WHEN to_regclass('durango_test_slow') IS NULL THEN 0 ELSE 8 END);\n"
)
FAILING_SWITCH = (
    "DO $$ BEGIN IF to_regclass('durango_test_fail_seed') IS NOT NULL THEN\n"
    "    RAISE EXCEPTION 'injected fault in pg_config_2';\nEND IF; END $$;\n"
)


@pytest.fixture(scope="session")
def faults_image(tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient) -> str:
    tmp = tmp_path_factory.mktemp("faults")
    app = demo_app_repo(tmp / "app")
    app.write("config/Migrations/20240401000000_MaybeSlow.sql", SLOW_MIGRATION)
    pg_config_2 = app.path / "config" / "schema" / "pg_config_2.sql"
    pg_config_2.write_text(FAILING_SWITCH + pg_config_2.read_text())
    app.commit("fault switches")
    ws = Workspace(make_local_project(tmp / "project", app.path, FAULTS), FAULTS, app, engine)
    ws.doit("runtime")
    return f"{FAULTS}-runtime:latest"


@pytest.fixture
def faults(stack: Stack, faults_image: str) -> Stack:
    stack.image = faults_image
    return stack


def test_a_failed_final_seeding_step_is_finished_by_the_next_start(faults: Stack) -> None:
    db = faults.database()
    wait_ready_db(db)
    sql(db, "CREATE TABLE durango_test_fail_seed ()")
    app, _ = faults.app()
    code, logs = wait_exit(app)
    assert code != 0 and "config/schema/pg_config_2.sql failed" in logs
    assert "Server: listening" not in logs
    assert sql(db, "SELECT state FROM durango_seed") == "seeded"

    again, _ = faults.app()
    code, logs = wait_exit(again)  # the fault is still there: it fails again, never "skipped"
    assert code != 0 and "Database seeding: skipped" not in logs

    sql(db, "DROP TABLE durango_test_fail_seed")
    fixed, port = faults.app()
    wait_healthy(fixed, port)
    assert "Database seeding: done" in fixed.logs().decode()
    assert sql(db, "SELECT count(*) FROM actions") == "12"  # seeded exactly once
    assert sql(db, "SELECT state FROM durango_seed") == "done"
    assert sql(db, "INSERT INTO actions (name) VALUES ('next') RETURNING id").split()[0] == "13"


def test_run_seeders_true_refuses_a_seeded_database_and_force_seeds_again(faults: Stack) -> None:
    db = faults.database()
    first, port = faults.app()
    wait_healthy(first, port)
    first.stop()
    refused, _ = faults.app({"RUN_SEEDERS": "true"})
    code, logs = wait_exit(refused)
    assert code != 0 and "RUN_SEEDERS=true refused: this database was seeded already" in logs
    assert sql(db, "SELECT count(*) FROM actions") == "12"

    sql(db, "TRUNCATE actions, project_templates")
    untouched, port = faults.app()  # auto never re-seeds a database that has its marker
    wait_healthy(untouched, port)
    assert sql(db, "SELECT count(*) FROM actions") == "0"
    untouched.stop()
    forced, port = faults.app({"RUN_SEEDERS": "force"})
    wait_healthy(forced, port)
    assert "Database seeding: done" in forced.logs().decode()
    assert sql(db, "SELECT count(*) FROM actions") == "12"


def test_data_without_a_marker_is_reported_and_left_alone(faults: Stack) -> None:
    db = faults.database()
    first, port = faults.app({"RUN_SEEDERS": "false"})
    wait_healthy(first, port)
    sql(db, "INSERT INTO actions (name) VALUES ('hand-made')")
    first.stop()
    app, port = faults.app()
    wait_healthy(app, port)
    assert "has 1 rows but this database has no durango_seed marker" in app.logs().decode()
    assert sql(db, "SELECT count(*) FROM actions") == "1"


def test_a_lost_lock_session_stops_the_container_loudly(faults: Stack) -> None:
    db = faults.database()
    wait_ready_db(db)
    sql(db, "CREATE TABLE durango_test_slow ()")
    app, _ = faults.app()
    holder = wait_for_lock_holder(db)
    sql(db, f"SELECT pg_terminate_backend({holder})")
    code, logs = wait_exit(app)
    assert code not in (0, 141), logs
    assert "Migration lock: lost during" in logs
    assert "Server: listening" not in logs

    sql(db, "DROP TABLE durango_test_slow")
    second, port = faults.app()
    wait_healthy(second, port)
    assert sql(db, "SELECT state FROM durango_seed") == "done"


def test_docker_stop_while_waiting_for_the_lock_is_prompt(faults: Stack) -> None:
    db = faults.database()
    wait_ready_db(db)
    # another session holds the lock for a minute (the database goes before it ends)
    holding = threading.Thread(
        target=db.exec_run,
        args=(["psql", "-U", "orangescrum_test", "-d", "orangescrum_test", "-c",
               "SELECT pg_advisory_lock(727274), pg_sleep(60)"],),
        daemon=True,
    )  # fmt: skip
    holding.start()
    app, _ = faults.app()
    deadline = time.monotonic() + 60
    while "Migration lock: waiting" not in app.logs().decode():
        assert time.monotonic() < deadline, app.logs().decode()
        time.sleep(0.5)
    started = time.monotonic()
    app.stop(timeout=30)
    assert time.monotonic() - started < 10
    assert "Stopping: signal received during migration lock" in app.logs().decode()


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"DB_WAIT_TIMEOUT": "60s"},
            "Settings: DB_WAIT_TIMEOUT must be a whole number (got '60s')",
        ),
        (
            {"MIGRATION_LOCK_KEY": "1); DROP TABLE x; --"},
            "Settings: MIGRATION_LOCK_KEY must be an integer",
        ),
        ({"RUN_SEEDERS": "yes please"}, "Settings: RUN_SEEDERS must be auto, true, force or false"),
        ({"QUEUE_WORKER": "sometimes"}, "Settings: QUEUE_WORKER must be true or false"),
        ({"APP_URL": "localhost:8080"}, "Settings: APP_URL must be the app's public URL"),
    ],
)
def test_bad_values_are_one_clear_line_and_nothing_runs(
    faults: Stack, env: dict[str, str], line: str
) -> None:
    db = faults.database()
    wait_ready_db(db)
    sql(db, "CREATE TABLE x (id int)")
    app, _ = faults.app(env)
    code, logs = wait_exit(app)
    assert code != 0 and line in logs
    assert sql(db, "SELECT to_regclass('x') IS NOT NULL, to_regclass('phinxlog') IS NULL") == "t|t"


def wait_for_lock_holder(db: Container, timeout: float = 60) -> str:
    """The backend holding the entrypoint's advisory lock, once it holds it."""
    query = (
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND objid = 727274 LIMIT 1"
    )
    deadline = time.monotonic() + timeout
    while True:
        pid = sql(db, query)
        if pid:
            return pid
        assert time.monotonic() < deadline, "the entrypoint never took the lock"
        time.sleep(0.2)
