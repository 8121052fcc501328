#!/bin/sh
# OrangeScrum EE container entrypoint. In order: validate settings, wait for the database,
# take an advisory lock, migrate (any failure stops the container), seed a fresh database once,
# then exec the server (or the queue worker) so that signals reach it.
# Every step logs one line with a stable prefix. Secrets never reach a command line or the log.
set -eu

APP_BIN=${APP_BIN:-/usr/local/bin/orangescrum-ee}
DB_PORT=${DB_PORT:-5432}
DB_WAIT_TIMEOUT=${DB_WAIT_TIMEOUT:-60}
MIGRATION_LOCK_TIMEOUT=${MIGRATION_LOCK_TIMEOUT:-600}
RUN_SEEDERS=${RUN_SEEDERS:-auto}
SKIP_MIGRATIONS=${SKIP_MIGRATIONS:-0}
MIGRATION_PLUGINS=${MIGRATION_PLUGINS:-Gitsync}
SEED_SENTINEL_TABLE=${SEED_SENTINEL_TABLE:-actions}
SERVER_PORT=${SERVER_PORT:-8080}
LOCK_KEY=${MIGRATION_LOCK_KEY:-727274}
RUNTIME_DIR=${TMPDIR:-/tmp}/orangescrum-entrypoint

log() { printf '%s\n' "$*"; }
die() { printf '%s\n' "$*" >&2; exit 1; }

is_placeholder() {
    case "$1" in
        *change-me* | *CHANGE_ME* | *changeme* | *replace-with* | *your-*) return 0 ;;
        *) return 1 ;;
    esac
}

validate_settings() {
    problems=0
    for name in DB_HOST DB_NAME DB_USERNAME SECURITY_SALT; do
        value=$(printenv "$name" || true)
        if [ -z "$value" ]; then
            log "Settings: $name is not set" >&2
            problems=$((problems + 1))
        elif is_placeholder "$value"; then
            log "Settings: $name still has its placeholder value from .env.example" >&2
            problems=$((problems + 1))
        fi
    done
    if [ -n "${DB_PASSWORD_FILE:-}" ]; then
        if [ ! -r "$DB_PASSWORD_FILE" ]; then
            log "Settings: DB_PASSWORD_FILE ($DB_PASSWORD_FILE) is not readable" >&2
            problems=$((problems + 1))
        fi
    elif [ -z "${DB_PASSWORD:-}" ]; then
        log "Settings: set DB_PASSWORD or DB_PASSWORD_FILE" >&2
        problems=$((problems + 1))
    elif is_placeholder "$DB_PASSWORD"; then
        log "Settings: DB_PASSWORD still has its placeholder value from .env.example" >&2
        problems=$((problems + 1))
    fi
    if [ -n "${SECURITY_SALT:-}" ] && [ "${#SECURITY_SALT}" -lt 32 ]; then
        log "Settings: SECURITY_SALT must be at least 32 characters" >&2
        problems=$((problems + 1))
    fi
    [ "$problems" -eq 0 ] || die "Settings: refusing to start ($problems problem(s) above)"
    log "Settings: ok (database ${DB_USERNAME}@${DB_HOST}:${DB_PORT}/${DB_NAME})"
}

# psql reads the password from a private pgpass file, never from its command line.
prepare_database_client() {
    mkdir -p "$RUNTIME_DIR"
    chmod 700 "$RUNTIME_DIR"
    if [ -n "${DB_PASSWORD_FILE:-}" ]; then
        password=$(cat "$DB_PASSWORD_FILE")
    else
        password=$DB_PASSWORD
    fi
    escaped=$(printf '%s' "$password" | sed 's/\\/\\\\/g; s/:/\\:/g')
    umask 077
    printf '%s:%s:%s:%s:%s\n' "$DB_HOST" "$DB_PORT" "$DB_NAME" "$DB_USERNAME" "$escaped" \
        > "$RUNTIME_DIR/pgpass"
    umask 022
    unset password escaped
    PGPASSFILE=$RUNTIME_DIR/pgpass PGHOST=$DB_HOST PGPORT=$DB_PORT PGDATABASE=$DB_NAME
    PGUSER=$DB_USERNAME PGCONNECT_TIMEOUT=5 PGAPPNAME=orangescrum-entrypoint
    PGOPTIONS='-c client_min_messages=warning'
    export PGPASSFILE PGHOST PGPORT PGDATABASE PGUSER PGCONNECT_TIMEOUT PGAPPNAME PGOPTIONS
}

sql() {
    psql -X -q -v ON_ERROR_STOP=1 -At "$@"
}

wait_for_database() {
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

# The embedded app is extracted by the binary; it tells us where (for Caddyfile, php.ini, SQL).
locate_app() {
    APP_DIR=$("$APP_BIN" php-cli .frankenphp/app-path.php) || die "App: the binary cannot run its embedded app"
    PHPRC=$APP_DIR/.frankenphp/php.ini
    export PHPRC
    log "App: $("$APP_BIN" php-cli bin/cake.php version | head -n 1) in $APP_DIR"
}

cake() {
    (cd "$APP_DIR" && "$APP_BIN" php-cli bin/cake.php "$@")
}

# One session holds a PostgreSQL advisory lock while this container migrates and seeds; other
# replicas wait here and then find the work done. The lock dies with the session.
acquire_lock() {
    fifo=$RUNTIME_DIR/lock.fifo
    rm -f "$fifo" "$RUNTIME_DIR/lock.out"
    mkfifo "$fifo"
    psql -X -q -At -v ON_ERROR_STOP=1 <"$fifo" >"$RUNTIME_DIR/lock.out" 2>&1 &
    LOCK_PID=$!
    exec 3>"$fifo"
    printf "SET lock_timeout = '%ss';\nSELECT pg_advisory_lock(%s);\nSELECT 'locked';\n" \
        "$MIGRATION_LOCK_TIMEOUT" "$LOCK_KEY" >&3
    log "Migration lock: waiting"
    until grep -q '^locked$' "$RUNTIME_DIR/lock.out" 2>/dev/null; do
        kill -0 "$LOCK_PID" 2>/dev/null || die "Migration lock: failed: $(head -n 1 "$RUNTIME_DIR/lock.out")"
        sleep 0.2
    done
    log "Migration lock: held"
}

release_lock() {
    printf 'SELECT pg_advisory_unlock(%s);\n\\q\n' "$LOCK_KEY" >&3
    exec 3>&-
    wait "$LOCK_PID" || true
    log "Migration lock: released"
}

run_migrations() {
    case "$SKIP_MIGRATIONS" in
        1 | true | yes)
            log "Migrations: skipped (SKIP_MIGRATIONS=$SKIP_MIGRATIONS)"
            return 0
            ;;
    esac
    cake migrations migrate || die "Migrations: failed; not starting on a half-migrated schema"
    for plugin in $MIGRATION_PLUGINS; do
        cake migrations migrate -p "$plugin" || die "Migrations: plugin $plugin failed; not starting"
    done
    log "Migrations: done (app and plugins: $MIGRATION_PLUGINS)"
}

seed_database() {
    case "$RUN_SEEDERS" in
        false | 0 | no)
            log "Database seeding: skipped (RUN_SEEDERS=$RUN_SEEDERS)"
            return 0
            ;;
        auto)
            exists=$(sql -c "SELECT to_regclass('${SEED_SENTINEL_TABLE}') IS NOT NULL") \
                || die "Database seeding: cannot check table ${SEED_SENTINEL_TABLE}; not guessing"
            if [ "$exists" != t ]; then
                log "Database seeding: skipped (no ${SEED_SENTINEL_TABLE} table after migrations)"
                return 0
            fi
            rows=$(sql -c "SELECT count(*) FROM ${SEED_SENTINEL_TABLE}") \
                || die "Database seeding: cannot count ${SEED_SENTINEL_TABLE}; not guessing"
            if [ "$rows" -gt 0 ]; then
                log "Database seeding: skipped (${SEED_SENTINEL_TABLE} has ${rows} rows)"
                return 0
            fi
            ;;
        true | 1 | yes) ;;
        *) die "Settings: RUN_SEEDERS must be auto, true or false (got $RUN_SEEDERS)" ;;
    esac
    sql -1 -f "$APP_DIR/config/schema/pg_config_1.sql" >/dev/null \
        || die "Database seeding: config/schema/pg_config_1.sql failed"
    cake migrations seed || die "Database seeding: seeds failed"
    sql -1 -f "$APP_DIR/config/schema/pg_config_2.sql" >/dev/null \
        || die "Database seeding: config/schema/pg_config_2.sql failed"
    log "Database seeding: done ($(sql -c "SELECT count(*) FROM ${SEED_SENTINEL_TABLE}") rows in ${SEED_SENTINEL_TABLE})"
}

start() {
    if [ "${QUEUE_WORKER:-false}" = true ]; then
        log "Server: starting the queue worker"
        cd "$APP_DIR"
        exec "$APP_BIN" php-cli bin/cake.php queue worker
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
    acquire_lock
    run_migrations
    seed_database
    release_lock
    start
}

main "$@"
