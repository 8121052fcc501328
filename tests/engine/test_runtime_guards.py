"""The runtime image guards its app and its migrations (demo app, real PostgreSQL):
- the app tree the binary extracts onto the cache volume is read-only, and checked (owner, mode,
  a content stamp) before every reuse: a PHP file the app's user drops into it is gone after a
  recreate, a tree planted by another uid is extracted again, a cache folder owned by another
  uid is refused;
- SIGTERM stops a running migration's whole process group within seconds, and no second
  replica takes the migration lock while it still runs;
- a lost lock session stops the running migration's process group at once.
The long migration is the upgrade image's, which sleeps while `durango_test_slow` exists."""

from __future__ import annotations

import subprocess
import threading
import time

import docker
from docker.models.containers import Container
from helpers import (
    Bundle,
    Stack,
    http,
    live_volume,
    sql,
    wait_exit,
    wait_ready_db,
    wait_until,
)

TREE = "find /data/cache/frankenphp-10001 -maxdepth 1 -name 'app-*' -type d ! -name '*.bad-*'"
# the migration's own session (this query's text matches the pattern too: it is left out)
MIGRATING = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE pid <> pg_backend_pid() AND query LIKE '%pg_sleep(CASE%'"
)


def recreate(bundle: Bundle, check: bool = True) -> subprocess.CompletedProcess[str]:
    return bundle.compose_run(
        "up", "-d", "--wait", "--force-recreate", "--no-deps", "orangescrum-app", check=check
    )


def as_root(bundle: Bundle, script: str) -> str:
    """A script as root on the app's cache volume (mounted at /data/cache), in a helper
    container: the app's own container drops every capability, so even its root cannot chown."""
    volume = f"{live_volume(bundle, 'app-cache')}:/data/cache"
    done = subprocess.run(
        ["docker", "run", "--rm", "-u", "0", "-v", volume,
         "--entrypoint", "sh", bundle.ws.image("runtime") + ":latest", "-c", script],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def test_a_php_file_dropped_into_the_app_tree_is_gone_after_a_recreate(bundle: Bundle) -> None:
    tree = bundle.app_exec(TREE).strip()
    refused = bundle.compose_run(
        "exec", "-T", "orangescrum-app", "sh", "-c", f"echo x > {tree}/webroot/evil.php",
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0  # read-only as extracted
    # the app's user owns the tree, so a determined one makes it writable and drops a file
    bundle.app_exec(
        f"chmod u+w {tree}/webroot && printf '<?php echo \"evil\";' > {tree}/webroot/evil.php"
    )
    recreate(bundle)
    assert "evil" not in http(bundle.port, "/evil.php")[1]
    assert http(bundle.port, "/home/healthcheck")[0] == 200
    logs = bundle.compose_run("logs", "orangescrum-app").stdout
    assert "cannot be reused (webroot is writable); extracting it again" in logs, logs
    assert "evil.php" not in bundle.app_exec(f"ls {bundle.app_exec(TREE).strip()}/webroot")


def test_a_tree_planted_by_another_uid_is_extracted_again(bundle: Bundle) -> None:
    tree = bundle.app_exec(TREE).strip()
    version = http(bundle.port, "/")[1]
    as_root(
        bundle,
        f"cp -a {tree} /data/cache/planted && echo planted > /data/cache/planted/VERSION && "
        f"chown -R 0:0 /data/cache/planted && rm -rf {tree} && mv /data/cache/planted {tree}",
    )
    recreate(bundle)
    body = http(bundle.port, "/")[1]
    assert "planted" not in body and body == version
    owners = bundle.app_exec(f"find $({TREE}) ! -user 10001 | wc -l").strip()
    assert owners == "0"


def test_a_cache_folder_owned_by_another_uid_is_refused(bundle: Bundle) -> None:
    as_root(bundle, "chown 0:0 /data/cache/frankenphp-10001")
    done = recreate(bundle, check=False)
    assert done.returncode != 0
    logs = bundle.compose_run("logs", "orangescrum-app").stdout
    assert "belongs to uid 0, not to this user (10001); refusing to use it" in logs


def migration_pid(container: Container) -> int:
    """The host PID of the migration's console process in a container."""
    top = container.top(ps_args="-eo pid,args")
    found = [int(row[0]) for row in top["Processes"] if "migrations migrate" in row[-1]]
    assert found, "\n".join(row[-1] for row in top["Processes"])
    return found[0]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def slow_database(stack: Stack) -> Container:
    db = stack.database()
    wait_ready_db(db)
    # a killed client's query ends within half a second (else pg_sleep runs to its end)
    sql(db, "ALTER SYSTEM SET client_connection_check_interval = '500ms'")
    sql(db, "SELECT pg_reload_conf()")
    sql(db, "CREATE TABLE durango_test_slow ()")
    return db


def lock_holder_ip(db: Container) -> str:
    return sql(
        db,
        "SELECT host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objid = 727274",
    )


def ip(container: Container, stack: Stack) -> str:
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][stack.network]["IPAddress"])


def test_sigterm_stops_a_running_migration_and_no_replica_migrates_alongside(
    stack: Stack, upgrade_image: str
) -> None:
    db = slow_database(stack)
    first, _ = stack.app(image=upgrade_image)
    wait_until(lambda: sql(db, MIGRATING) == "1", 120, "the first replica's migration")
    pid = migration_pid(first)
    second, port = stack.app(image=upgrade_image)
    wait_until(lambda: "Migration lock: waiting" in second.logs().decode(), 60, "the second")
    overlap: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # the second must never hold the lock while the first still migrates
        second_ip = ip(second, stack)
        while not stop.is_set():
            if lock_holder_ip(db) == second_ip and alive(pid):
                overlap.append("the second replica held the lock during the first's migration")
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    first.kill(signal="SIGTERM")
    sent = time.monotonic()
    wait_until(lambda: not alive(pid), 10, "the end of the first's migration")
    assert time.monotonic() - sent < 5
    sql(db, "DROP TABLE durango_test_slow")  # the second replica's migration need not be slow
    code, logs = wait_exit(first, timeout=30)
    assert code == 143 and "Stopping: signal received during migrations" in logs, logs
    try:
        wait_until(lambda: http_ok(port), 180, "the second replica serving")
    finally:
        stop.set()
        watcher.join()
    assert overlap == []
    assert sql(db, "SELECT count(*) FROM phinxlog WHERE version = 20240501000000") == "1"


def http_ok(port: int) -> bool:
    try:
        return http(port, "/home/healthcheck")[0] == 200
    except OSError:
        return False


def test_a_lost_lock_stops_the_running_migration_at_once(
    stack: Stack, upgrade_image: str, engine: docker.DockerClient
) -> None:
    db = slow_database(stack)
    app, _ = stack.app(image=upgrade_image)
    wait_until(lambda: sql(db, MIGRATING) == "1", 120, "the migration")
    pid = migration_pid(app)
    holder = sql(
        db,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = 727274",
    )
    sql(db, f"SELECT pg_terminate_backend({holder})")
    lost = time.monotonic()
    wait_until(lambda: not alive(pid), 10, "the end of the migration")
    assert time.monotonic() - lost < 5  # at once, not when the migration would have ended
    wait_until(lambda: sql(db, MIGRATING) == "0", 5, "the end of the migration's session")
    code, logs = wait_exit(app, timeout=30)
    assert code not in (0, 141) and "Migration lock: lost during Migrations" in logs, logs
    assert sql(db, "SELECT count(*) FROM phinxlog WHERE version = 20240501000000") == "0"
