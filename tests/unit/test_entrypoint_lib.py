"""The entrypoint's decisions (orangescrum-ee/entrypoint-lib.sh), run with sh on the host: the
seeding plan for every marker state and RUN_SEEDERS value, every setting's validation, the
scheduler's cron matching, and the process-group control that stops a migration."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "orangescrum-ee" / "entrypoint-lib.sh"
GOOD = {
    "DB_HOST": "db",
    "DB_NAME": "app",
    "DB_USERNAME": "app",
    "DB_PASSWORD": "a-real-password",
    "SECURITY_SALT": "0123456789abcdef0123456789abcdef",
    "DB_PORT": "5432",
    "DB_WAIT_TIMEOUT": "60",
    "MIGRATION_LOCK_TIMEOUT": "1800",
    "MIGRATION_TIMEOUT": "1800",
    "MIGRATION_LOCK_KEY": "727274",
    "SERVER_PORT": "8080",
    "RUN_SEEDERS": "auto",
    "SKIP_MIGRATIONS": "false",
    "APP_URL": "http://localhost:8080",
}


def sh(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`. entrypoint-lib.sh; <script>` with only `env` set (and PATH)."""
    return subprocess.run(
        ["sh", "-c", f'. "{LIB}"; {script}'],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


STATES = ["none", "started", "config1", "seeded", "done"]
# (RUN_SEEDERS, marker state) -> the plan's first word, or "refuse"
EXPECTED = {
    "false": dict.fromkeys(STATES, "skip"),
    "force": dict.fromkeys(STATES, "run started"),
    "true": {"none": "run started", **dict.fromkeys(STATES[1:], "refuse")},
    "auto": {
        "none": "run started",
        "started": "refuse",
        "config1": "refuse",
        "seeded": "run seeded",
        "done": "skip",
    },
}


@pytest.mark.parametrize("run", list(EXPECTED))
@pytest.mark.parametrize("state", STATES)
def test_the_seeding_plan_for_every_marker_state(run: str, state: str) -> None:
    done = sh(f"seed_plan {run} {state} 0")
    expected = EXPECTED[run][state]
    if expected == "refuse":
        assert done.returncode == 1 and done.stdout.strip(), done.stdout
        assert "not seeding again" in done.stdout.lower() or "refused" in done.stdout
    else:
        assert done.returncode == 0, done.stdout
        assert done.stdout.startswith(expected), done.stdout


def test_rows_without_a_marker_are_left_alone_and_a_missing_table_is_skipped() -> None:
    assert sh("seed_plan auto none 12").stdout.startswith("warn the sentinel table has 12 rows")
    assert sh("seed_plan auto none missing").stdout.startswith("skip no sentinel table")
    odd = sh("seed_plan auto none 'x1'")
    assert odd.returncode == 1 and "not guessing" in odd.stdout


def test_good_settings_pass() -> None:
    done = sh("validate_settings", GOOD)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "access_log", ["stdout", "stderr", "discard", "file /data/logs/access.log"]
)
def test_every_access_log_destination_the_server_takes_passes(access_log: str) -> None:
    done = sh("validate_settings", {**GOOD, "ACCESS_LOG": access_log})
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DB_HOST", "", "DB_HOST is not set"),
        ("DB_NAME", "change-me", "DB_NAME still has its placeholder"),
        ("DB_USERNAME", "", "DB_USERNAME is not set"),
        ("DB_PASSWORD", "", "set DB_PASSWORD or DB_PASSWORD_FILE"),
        ("DB_PASSWORD", "change-me", "DB_PASSWORD still has its placeholder"),
        (
            "DB_PASSWORD_FILE",
            "/nonexistent/pw",
            "DB_PASSWORD_FILE (/nonexistent/pw) is not readable",
        ),
        ("SECURITY_SALT", "short", "SECURITY_SALT must be at least 32 characters"),
        ("DB_PORT", "5432x", "DB_PORT must be a whole number"),
        ("DB_WAIT_TIMEOUT", "60s", "DB_WAIT_TIMEOUT must be a whole number"),
        ("MIGRATION_TIMEOUT", "-1", "MIGRATION_TIMEOUT must be a whole number"),
        ("MIGRATION_LOCK_TIMEOUT", "10", "must be at least MIGRATION_TIMEOUT"),
        ("MIGRATION_LOCK_KEY", "1;drop", "MIGRATION_LOCK_KEY must be an integer"),
        ("SERVER_PORT", "http", "SERVER_PORT must be a whole number"),
        ("RUN_SEEDERS", "always", "RUN_SEEDERS must be auto, true, force or false"),
        ("SKIP_MIGRATIONS", "maybe", "SKIP_MIGRATIONS must be true or false"),
        ("QUEUE_WORKER", "sometimes", "QUEUE_WORKER must be true or false"),
        ("APP_ROLE", "worker", "APP_ROLE must be server, queue, scheduler, migrate or job"),
        ("APP_URL", "localhost:8080", "APP_URL must be the app's public URL"),
        ("SEED_SENTINEL_TABLE", "actions'; DROP TABLE x; --", "is not a table name"),
        ("ACCESS_LOG", "syslog", "ACCESS_LOG must be stdout, stderr, discard or file /<path>"),
        ("ACCESS_LOG", "file logs/access.log", "ACCESS_LOG must be stdout, stderr, discard"),
        ("ACCESS_LOG", "file /data/logs/", "ACCESS_LOG must be stdout, stderr, discard"),
        ("ACCESS_LOG", "file /data/logs/a b.log", "ACCESS_LOG's file path may hold only"),
        ("ACCESS_LOG", "file /data/../etc/x.log", "ACCESS_LOG's file path may hold only"),
    ],
)
def test_every_setting_is_refused_in_one_line_when_it_cannot_work(
    name: str, value: str, message: str
) -> None:
    done = sh("validate_settings", {**GOOD, name: value})
    assert done.returncode == 1
    problems = [line for line in done.stderr.splitlines() if "refusing to start" not in line]
    assert len(problems) == 1 and message in problems[0], done.stderr


@pytest.mark.parametrize(
    ("value", "role"),
    [("yes", "queue"), ("true", "queue"), ("1", "queue"), ("No", "server"), ("false", "server")],
)
def test_queue_worker_reads_every_boolean_spelling(value: str, role: str) -> None:
    assert sh("app_role", {"QUEUE_WORKER": value}).stdout.strip() == role


def test_app_role_wins_over_queue_worker_and_unknown_roles_are_refused() -> None:
    assert sh("app_role", {"APP_ROLE": "scheduler"}).stdout.strip() == "scheduler"
    assert (
        sh("app_role", {"APP_ROLE": "migrate", "QUEUE_WORKER": "true"}).stdout.strip() == "migrate"
    )
    assert sh("app_role", {"APP_ROLE": "worker"}).returncode == 1


@pytest.mark.parametrize(
    ("schedule", "now", "matches"),
    [
        ("* * * * *", "07 03 01 12 2", True),
        ("*/30 * * * *", "30 10 01 12 2", True),
        ("*/30 * * * *", "31 10 01 12 2", False),
        ("0 9 * * 1-5", "00 09 06 12 0", False),  # Sunday
        ("0 9 * * 7", "00 09 06 12 0", True),  # 7 is Sunday too
        ("0 9 1 * 1", "00 09 02 12 1", True),  # day or weekday, as cron
        ("0 9 1 * *", "00 09 02 12 1", False),
        ("5,10-12 * * * *", "11 00 01 01 1", True),
        ("0 0 1 1 *", "00 00 01 01 3", True),
    ],
)
def test_cron_schedules_match_as_cron_does(schedule: str, now: str, matches: bool) -> None:
    assert (sh(f"cron_matches '{schedule}' '{now}'").returncode == 0) is matches


def test_app_url_sets_the_secure_cookie_and_the_base_url() -> None:
    assert sh("fill_app_env '{app_url_secure}' https://x.example").stdout.strip() == "true"
    assert sh("fill_app_env '{app_url_secure}' http://x.example").stdout.strip() == "false"
    assert (
        sh("fill_app_env 'u={app_url}/' https://a.example").stdout.strip() == "u=https://a.example/"
    )


def test_discovered_plugins_are_those_with_migrations(tmp_path: Path) -> None:
    for name in ("Zeta", "Alpha", "NoMigrations"):
        (tmp_path / "plugins" / name / "config").mkdir(parents=True)
    for name in ("Zeta", "Alpha"):
        (tmp_path / "plugins" / name / "config" / "Migrations").mkdir()
    assert sh(f"migration_plugins discover {tmp_path}").stdout.strip() == "Alpha Zeta"
    assert sh(f"migration_plugins 'One Two' {tmp_path}").stdout.strip() == "One Two"


def _alive(marker: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if marker in line and "sh -c" not in line]


def test_a_bounded_step_stops_its_whole_process_group() -> None:
    marker = f"sleep {61 + os.getpid() % 100}"
    done = sh(f"start_group sh -c '{marker} & {marker}'; watch_group 1 ''; echo rc=$?")
    assert "rc=124" in done.stdout
    time.sleep(0.3)
    assert _alive(marker) == []


def test_a_failing_check_stops_the_step_at_once(tmp_path: Path) -> None:
    """A lost lock: the check fails while the step runs, and the step's group is gone."""
    flag = tmp_path / "lock-lost"
    marker = f"sleep {163 + os.getpid() % 100}"
    script = (
        f"lock_ok() {{ [ ! -e {flag} ]; }}; start_group sh -c '{marker}'; "
        f"(sleep 1; touch {flag}) & started=$(date +%s); watch_group 0 lock_ok; "
        "echo rc=$? after=$(($(date +%s) - started))"
    )
    done = sh(script)
    assert "rc=125" in done.stdout, done.stdout
    assert int(done.stdout.split("after=")[1]) <= 4
    time.sleep(0.3)
    assert _alive(marker) == []


def test_a_step_keeps_its_own_exit_status() -> None:
    assert "rc=7" in sh("start_group sh -c 'exit 7'; watch_group 5 ''; echo rc=$?").stdout


def test_a_job_is_found_by_name_in_the_facts() -> None:
    jobs = (
        "queue-worker|* * * * *|58|queue worker --max-runtime 45\n"
        "recurring-task|*/30 * * * *|0|recurring_task"
    )
    found = sh(f"job_line recurring-task '{jobs}'")
    assert found.stdout.strip() == "recurring-task|*/30 * * * *|0|recurring_task"
    assert sh(f"job_line nightly '{jobs}'").returncode == 1
