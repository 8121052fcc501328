#!/bin/sh
# OrangeScrum EE container entrypoint. In order: validate settings, wait for the database, link
# the app's persistent paths to the volumes, take an advisory lock, migrate (any failure stops
# the container), seed a fresh database once (a marker row records it), then exec the server (or
# the queue worker) so that signals reach it. The image runs this under tini, which forwards
# SIGTERM/SIGINT to every process here: `docker stop` is prompt at every step, and the lock
# dies with its session.
# Every step logs one line with a stable prefix. Secrets never reach a command line or the log.
# Settings are validated before anything runs; values reach SQL only as psql variables.
set -eu

APP_BIN=${APP_BIN:-/usr/local/bin/orangescrum-ee}
DB_PORT=${DB_PORT:-5432}
DB_WAIT_TIMEOUT=${DB_WAIT_TIMEOUT:-60}
MIGRATION_LOCK_TIMEOUT=${MIGRATION_LOCK_TIMEOUT:-600}
MIGRATION_LOCK_KEY=${MIGRATION_LOCK_KEY:-727274}
MIGRATION_TIMEOUT=${MIGRATION_TIMEOUT:-1800}
RUN_SEEDERS=${RUN_SEEDERS:-auto}
SKIP_MIGRATIONS=${SKIP_MIGRATIONS:-false}
MIGRATION_PLUGINS=${MIGRATION_PLUGINS-Gitsync}
SEED_SENTINEL_TABLE=${SEED_SENTINEL_TABLE:-actions}
APP_PERSISTENT_PATHS=${APP_PERSISTENT_PATHS-logs=/data/logs tmp/sessions=/data/sessions webroot/files=/data/uploads}
APP_LOG_FILES=${APP_LOG_FILES-logs/error.log logs/debug.log}
QUEUE_COMMAND=${QUEUE_COMMAND:-bin/cake.php queue worker}
SERVER_PORT=${SERVER_PORT:-8080}
RUNTIME_DIR=${TMPDIR:-/tmp}/orangescrum-entrypoint
SEED_MARKER=durango_seed
STEP=start

log() { printf '%s\n' "$*"; }
die() { printf '%s\n' "$*" >&2; exit 1; }

# SIGPIPE is ignored so that writing to a lock session that died is an error we report, not a
# silent exit 141. SIGTERM/SIGINT (from tini) end the entrypoint with one line.
trap '' PIPE
trap 'log "Stopping: signal received during ${STEP}" >&2; exit 143' TERM INT

is_placeholder() {
    case "$1" in
        *change-me* | *CHANGE_ME* | *changeme* | *replace-with* | *your-*) return 0 ;;
        *) return 1 ;;
    esac
}

is_uint() { case "$1" in '' | *[!0-9]*) return 1 ;; *) [ "${#1}" -le 9 ] ;; esac }
is_int() {
    case "$1" in -*) is_uint_long "${1#-}" ;; *) is_uint_long "$1" ;; esac
}
is_uint_long() { case "$1" in '' | *[!0-9]*) return 1 ;; *) [ "${#1}" -le 18 ] ;; esac }

validate_settings() {
    STEP=settings
    problems=0
    problem() { log "Settings: $*" >&2; problems=$((problems + 1)); }
    for name in DB_HOST DB_NAME DB_USERNAME SECURITY_SALT; do
        eval "value=\${$name:-}"
        if [ -z "$value" ]; then
            problem "$name is not set"
        elif is_placeholder "$value"; then
            problem "$name still has its placeholder value from .env.example"
        fi
    done
    if [ -n "${DB_PASSWORD_FILE:-}" ]; then
        [ -r "$DB_PASSWORD_FILE" ] || problem "DB_PASSWORD_FILE ($DB_PASSWORD_FILE) is not readable"
    elif [ -z "${DB_PASSWORD:-}" ]; then
        problem "set DB_PASSWORD or DB_PASSWORD_FILE"
    elif is_placeholder "$DB_PASSWORD"; then
        problem "DB_PASSWORD still has its placeholder value from .env.example"
    fi
    if [ -n "${SECURITY_SALT:-}" ] && [ "${#SECURITY_SALT}" -lt 32 ]; then
        problem "SECURITY_SALT must be at least 32 characters"
    fi
    for name in DB_PORT DB_WAIT_TIMEOUT MIGRATION_LOCK_TIMEOUT MIGRATION_TIMEOUT SERVER_PORT; do
        eval "value=\${$name}"
        is_uint "$value" || problem "$name must be a whole number (got '$value')"
    done
    case "$SEED_SENTINEL_TABLE" in
        '' | *[!A-Za-z0-9_.]*) problem "SEED_SENTINEL_TABLE must be a table name (got '$SEED_SENTINEL_TABLE')" ;;
    esac
    is_int "$MIGRATION_LOCK_KEY" || problem "MIGRATION_LOCK_KEY must be an integer (got '$MIGRATION_LOCK_KEY')"
    case "$RUN_SEEDERS" in
        auto | true | force | false) ;;
        *) problem "RUN_SEEDERS must be auto, true, force or false (got '$RUN_SEEDERS')" ;;
    esac
    case "$SKIP_MIGRATIONS" in
        true | false | 1 | 0 | yes | no) ;;
        *) problem "SKIP_MIGRATIONS must be true or false (got '$SKIP_MIGRATIONS')" ;;
    esac
    set -f
    for plugin in $MIGRATION_PLUGINS; do
        case "$plugin" in
            *[!A-Za-z0-9_/]*) problem "MIGRATION_PLUGINS: '$plugin' is not a plugin name" ;;
        esac
    done
    for pair in $APP_PERSISTENT_PATHS; do
        path=${pair%%=*} target=${pair#*=}
        case "$path/" in
            /* | *../* | =* | "$pair/") problem "APP_PERSISTENT_PATHS: '$pair' is not app-path=/volume-path" ;;
        esac
        case "$target" in /*) ;; *) problem "APP_PERSISTENT_PATHS: '$pair' needs an absolute target" ;; esac
    done
    set +f
    [ "$problems" -eq 0 ] || die "Settings: refusing to start ($problems problem(s) above)"
    log "Settings: ok (database ${DB_USERNAME}@${DB_HOST}:${DB_PORT}/${DB_NAME})"
}

# pgpass escapes \ and : in every field (PostgreSQL docs, "The Password File").
pgpass_field() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/:/\\:/g'; }

# psql reads the password from a private pgpass file, never from its command line.
prepare_database_client() {
    STEP="database client"
    mkdir -p "$RUNTIME_DIR"
    chmod 700 "$RUNTIME_DIR"
    if [ -n "${DB_PASSWORD_FILE:-}" ]; then
        password=$(cat "$DB_PASSWORD_FILE")
    else
        password=$DB_PASSWORD
    fi
    (
        umask 077
        printf '%s:%s:%s:%s:%s\n' "$(pgpass_field "$DB_HOST")" "$DB_PORT" \
            "$(pgpass_field "$DB_NAME")" "$(pgpass_field "$DB_USERNAME")" \
            "$(pgpass_field "$password")" > "$RUNTIME_DIR/pgpass"
    )
    unset password
    PGPASSFILE=$RUNTIME_DIR/pgpass PGHOST=$DB_HOST PGPORT=$DB_PORT PGDATABASE=$DB_NAME
    PGUSER=$DB_USERNAME PGCONNECT_TIMEOUT=5 PGAPPNAME=orangescrum-entrypoint
    PGOPTIONS='-c client_min_messages=warning'
    export PGPASSFILE PGHOST PGPORT PGDATABASE PGUSER PGCONNECT_TIMEOUT PGAPPNAME PGOPTIONS
}

sql() {
    psql -X -q -v ON_ERROR_STOP=1 -At "$@"
}

wait_for_database() {
    STEP="database wait"
    waited=0
    until pg_isready -q -t 2; do
        if [ "$waited" -ge "$DB_WAIT_TIMEOUT" ]; then
            die "Database wait: ${DB_HOST}:${DB_PORT} did not accept connections within ${DB_WAIT_TIMEOUT}s"
        fi
        sleep 2
        waited=$((waited + 2))
    done
    if ! error=$(sql -c 'SELECT 1' 2>&1 >/dev/null); then
        die "Database wait: cannot log in to ${DB_HOST}:${DB_PORT}/${DB_NAME} as ${DB_USERNAME}: $(printf '%s' "$error" | head -n 1)"
    fi
    log "Database wait: ${DB_HOST}:${DB_PORT} is ready (after ${waited}s)"
}

# The binary extracts its app and loads its own php.ini; it tells us where the app is.
locate_app() {
    STEP="app"
    APP_DIR=$("$APP_BIN" php-cli .frankenphp/app-path.php) || die "App: the binary cannot run its embedded app"
    APP_VERSION=$("$APP_BIN" php-cli bin/cake.php version 2>/dev/null | head -n 1) || APP_VERSION=unknown
    log "App: ${APP_VERSION} in $APP_DIR"
}

# Folders the app writes that must outlive the container become links to the volumes; what the
# image shipped in them is copied over once, never over the volume's own files.
link_persistent_paths() {
    STEP="persistent paths"
    linked=""
    set -f
    for pair in $APP_PERSISTENT_PATHS; do
        path=${pair%%=*} target=${pair#*=}
        app_path=$APP_DIR/$path
        mkdir -p "$target" || die "Persistent paths: cannot create $target"
        if [ -L "$app_path" ] && [ "$(readlink "$app_path")" = "$target" ]; then
            linked="$linked $path"
            continue
        fi
        mkdir -p "$(dirname "$app_path")"
        if [ -d "$app_path" ] && [ ! -L "$app_path" ]; then
            if [ -z "$(ls -A "$target")" ]; then
                cp -R -p "$app_path/." "$target/" || die "Persistent paths: cannot copy $path into $target"
            fi
            mv "$app_path" "$app_path.durango-old.$$" 2>/dev/null || true
            rm -rf "$app_path.durango-old.$$"
        fi
        ln -sfn "$target" "$app_path"
        [ "$(readlink "$app_path")" = "$target" ] || die "Persistent paths: could not link $path to $target"
        linked="$linked $path"
    done
    set +f
    log "Persistent paths:${linked:- none}"
}

# One psql session holds a PostgreSQL advisory lock while this container migrates and seeds;
# other replicas wait here and then find the work done. TCP keepalives notice a dead peer; the
# session is asked to answer after every step, so a lost lock stops the container loudly.
acquire_lock() {
    STEP="migration lock"
    fifo=$RUNTIME_DIR/lock.fifo
    LOCK_OUT=$RUNTIME_DIR/lock.out
    rm -f "$fifo" "$LOCK_OUT"
    mkfifo "$fifo"
    psql -X -q -At -v ON_ERROR_STOP=1 -v lock_key="$MIGRATION_LOCK_KEY" \
        -v lock_timeout="${MIGRATION_LOCK_TIMEOUT}s" \
        -d "keepalives=1 keepalives_idle=10 keepalives_interval=5 keepalives_count=3" \
        <"$fifo" >"$LOCK_OUT" 2>&1 &
    LOCK_PID=$!
    exec 3>"$fifo"
    LOCK_PINGS=0
    lock_send "SET lock_timeout = :'lock_timeout';
SELECT :SERVER_VERSION_NUM >= 140000 AS has_idle_timeout \\gset
\\if :has_idle_timeout
SET idle_session_timeout = 0;
\\endif
SELECT pg_advisory_lock(:'lock_key'::bigint) IS NULL;
SELECT 'locked';" || die "Migration lock: the lock session ended before the lock: $(lock_reason)"
    log "Migration lock: waiting"
    until grep -q '^locked$' "$LOCK_OUT" 2>/dev/null; do
        running "$LOCK_PID" || die "Migration lock: failed: $(lock_reason)"
        sleep 0.2
    done
    log "Migration lock: held"
}

lock_send() { printf '%s\n' "$1" >&3 2>/dev/null; }
lock_reason() { grep -v '^\(locked\|alive-[0-9]*\|f\|\)$' "$LOCK_OUT" 2>/dev/null | head -n 1; }
# A child that exited stays a zombie until the shell waits for it: read its state instead.
running() {
    state=$(sed 's/.*) \([A-Z]\).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# The lock session must still answer: if it died (database restart, pg_terminate_backend, a
# pooler, a network cut) the lock is gone and another replica may be migrating.
check_lock() {
    LOCK_PINGS=$((LOCK_PINGS + 1))
    if lock_send "SELECT 'alive-$LOCK_PINGS';"; then
        tries=0
        while [ "$tries" -lt 100 ]; do
            grep -q "^alive-$LOCK_PINGS\$" "$LOCK_OUT" 2>/dev/null && return 0
            running "$LOCK_PID" || break
            sleep 0.1
            tries=$((tries + 1))
        done
    fi
    die "Migration lock: lost after $1 (the session holding it ended: $(lock_reason)); stopping so that no other replica migrates alongside; the next start retries"
}

release_lock() {
    lock_send "SELECT pg_advisory_unlock(:'lock_key'::bigint);" || true
    lock_send '\q' || true
    exec 3>&-
    wait "$LOCK_PID" 2>/dev/null || true
    log "Migration lock: released"
}

cake() {
    (cd "$APP_DIR" && "$APP_BIN" php-cli bin/cake.php "$@")
}

# A migration that hangs must not hold the lock for ever: each command is bounded.
cake_bounded() {
    status=0
    (cd "$APP_DIR" && timeout "$MIGRATION_TIMEOUT" "$APP_BIN" php-cli bin/cake.php "$@") || status=$?
    [ "$status" -ne 124 ] || log "Migrations: \`$*\` did not finish within MIGRATION_TIMEOUT=${MIGRATION_TIMEOUT}s" >&2
    return "$status"
}

run_migrations() {
    STEP=migrations
    case "$SKIP_MIGRATIONS" in
        1 | true | yes)
            log "Migrations: skipped (SKIP_MIGRATIONS=$SKIP_MIGRATIONS)"
            return 0
            ;;
    esac
    cake_bounded migrations migrate || die "Migrations: failed; not starting on a half-migrated schema"
    check_lock "the app's migrations"
    set -f
    for plugin in $MIGRATION_PLUGINS; do
        cake_bounded migrations migrate -p "$plugin" || die "Migrations: plugin $plugin failed; not starting"
        check_lock "plugin $plugin's migrations"
    done
    set +f
    log "Migrations: done (app and plugins: ${MIGRATION_PLUGINS:-none})"
}

# --- seeding: a marker row records how far seeding got -----------------------------------------
# durango_seed holds one row: state started -> config1 -> seeded -> done. The last step and
# `done` are one transaction, so "done" means every step committed.

seed_state() {
    sql -v marker="$SEED_MARKER" <<'SQL'
SELECT CASE WHEN to_regclass(:'marker') IS NULL THEN 'SELECT ''none'''
            ELSE 'SELECT coalesce(max(state), ''none'') FROM durango_seed' END \gexec
SQL
}

# "missing", or the row count; the table name is resolved by PostgreSQL, never pasted.
sentinel_rows() {
    sql -v sentinel="$SEED_SENTINEL_TABLE" <<'SQL'
SELECT CASE WHEN to_regclass(:'sentinel') IS NULL THEN 'SELECT ''missing'''
            ELSE format('SELECT count(*) FROM %s', to_regclass(:'sentinel')) END \gexec
SQL
}

set_seed_state() {
    sql -v state="$1" -v version="$APP_VERSION" <<'SQL' >/dev/null
CREATE TABLE IF NOT EXISTS durango_seed (
    id int PRIMARY KEY CHECK (id = 1),
    state text NOT NULL,
    app_version text,
    started_at timestamptz NOT NULL DEFAULT now(),
    seeded_at timestamptz
);
INSERT INTO durango_seed (id, state, app_version) VALUES (1, :'state', :'version')
ON CONFLICT (id) DO UPDATE SET state = excluded.state, app_version = excluded.app_version,
    started_at = now(), seeded_at = NULL;
SQL
}

run_seed_steps() {
    from=$1
    schema=$APP_DIR/config/schema
    if [ "$from" = started ]; then
        set_seed_state started || die "Database seeding: cannot write the $SEED_MARKER marker"
        sql -1 -f "$schema/pg_config_1.sql" -c "UPDATE durango_seed SET state = 'config1'" >/dev/null \
            || die "Database seeding: config/schema/pg_config_1.sql failed"
        check_lock "pg_config_1.sql"
        cake migrations seed || die "Database seeding: seeds failed (state recorded in $SEED_MARKER: config1)"
        sql -c "UPDATE durango_seed SET state = 'seeded'" >/dev/null \
            || die "Database seeding: cannot record that the seeds ran"
        check_lock "the seeds"
    fi
    sql -1 -f "$schema/pg_config_2.sql" \
        -c "UPDATE durango_seed SET state = 'done', seeded_at = now()" >/dev/null \
        || die "Database seeding: config/schema/pg_config_2.sql failed; the seeds are in, the next start runs it again"
    check_lock "pg_config_2.sql"
}

seed_database() {
    STEP="database seeding"
    [ "$RUN_SEEDERS" != false ] || { log "Database seeding: skipped (RUN_SEEDERS=false)"; return 0; }
    state=$(seed_state) || die "Database seeding: cannot read the $SEED_MARKER marker; not guessing"
    rows=$(sentinel_rows) || die "Database seeding: cannot count ${SEED_SENTINEL_TABLE}; not guessing"
    case "$rows" in
        missing | '' | *[!0-9]*)
            [ "$rows" = missing ] || die "Database seeding: unexpected row count '$rows' for ${SEED_SENTINEL_TABLE}; not guessing"
            ;;
    esac
    case "$RUN_SEEDERS:$state" in
        force:*) from=started ;;
        true:none) from=started ;;
        true:*)
            die "Database seeding: RUN_SEEDERS=true refused: this database was seeded already ($SEED_MARKER: $state); RUN_SEEDERS=force runs the seeders again"
            ;;
        auto:done)
            log "Database seeding: skipped (seeded already, see $SEED_MARKER)"
            return 0
            ;;
        auto:seeded) from=seeded ;;
        auto:started | auto:config1)
            die "Database seeding: an earlier seeding stopped part-way ($SEED_MARKER state: $state): the seeders may have written some rows. Not seeding again by itself. Recovery (docs/PRODUCTION_DEPLOYMENT.md, Seeding): restore the database from the backup taken before, or empty the seeded tables and start once with RUN_SEEDERS=force"
            ;;
        auto:none)
            if [ "$rows" = missing ]; then
                log "Database seeding: skipped (no ${SEED_SENTINEL_TABLE} table after migrations)"
                return 0
            fi
            if [ "$rows" -gt 0 ]; then
                log "Database seeding: WARNING: ${SEED_SENTINEL_TABLE} has ${rows} rows but this database has no $SEED_MARKER marker (restored from an older backup, or seeded by hand?); leaving it alone. RUN_SEEDERS=force seeds anyway." >&2
                return 0
            fi
            from=started
            ;;
    esac
    run_seed_steps "$from"
    log "Database seeding: done ($(sentinel_rows) rows in ${SEED_SENTINEL_TABLE}; marker in $SEED_MARKER)"
}

# Application log files also reach the container's log (stdout).
forward_logs() {
    files=""
    set -f
    for file in $APP_LOG_FILES; do
        files="$files $APP_DIR/$file"
    done
    [ -n "$files" ] || return 0
    # shellcheck disable=SC2086 # one word per file, globbing off
    tail -q -n 0 -F $files 2>/dev/null &
    set +f
}

start() {
    STEP="server start"
    unset PGPASSFILE PGHOST PGPORT PGDATABASE PGUSER PGCONNECT_TIMEOUT PGAPPNAME PGOPTIONS
    forward_logs
    if [ "${QUEUE_WORKER:-false}" = true ]; then
        log "Server: starting the queue worker"
        cd "$APP_DIR"
        echo "$$" > "$RUNTIME_DIR/queue.pid"
        set -f
        # shellcheck disable=SC2086 # QUEUE_COMMAND is words, globbing off
        exec "$APP_BIN" php-cli $QUEUE_COMMAND
    fi
    log "Server: listening on :${SERVER_PORT}"
    exec "$APP_BIN" run --config "$APP_DIR/.frankenphp/Caddyfile" --adapter caddyfile
}

main() {
    validate_settings
    mkdir -p "${TMPDIR:-/tmp}"
    prepare_database_client
    wait_for_database
    locate_app
    link_persistent_paths
    if [ "${QUEUE_WORKER:-false}" != true ]; then
        acquire_lock
        run_migrations
        seed_database
        release_lock
    fi
    start
}

main "$@"
