# shellcheck shell=sh
# The entrypoint's decisions, as small functions: input to output and exit code, nothing run
# against a database or a server. entrypoint.sh sources this file and wires the steps;
# tests/unit/test_entrypoint_lib.py runs each function with sh on the host.

log() { printf '%s\n' "$*"; }
warn() { printf '%s\n' "$*" >&2; }

# --- values ------------------------------------------------------------------------------------

# A boolean setting: true/false, yes/no, on/off, 1/0 (any case) -> prints true or false;
# exit 1 for anything else.
bool_value() {
    case "$1" in
        [Tt][Rr][Uu][Ee] | [Yy][Ee][Ss] | [Oo][Nn] | 1) echo true ;;
        [Ff][Aa][Ll][Ss][Ee] | [Nn][Oo] | [Oo][Ff][Ff] | 0) echo false ;;
        *) return 1 ;;
    esac
}

is_placeholder() {
    case "$1" in
        *change-me* | *CHANGE_ME* | *changeme* | *replace-with* | *your-*) return 0 ;;
        *) return 1 ;;
    esac
}

is_uint() { case "$1" in '' | *[!0-9]*) return 1 ;; *) [ "${#1}" -le 9 ] ;; esac }
is_int() {
    case "$1" in -*) set -- "${1#-}" ;; esac
    case "$1" in '' | *[!0-9]*) return 1 ;; *) [ "${#1}" -le 18 ] ;; esac
}

# What the container is: server (default), queue (QUEUE_WORKER=true), scheduler, migrate
# (one-shot: migrate and seed, then exit), job (one-shot: run the job APP_JOB names now). Exit 1
# for an unknown role or a bad QUEUE_WORKER.
app_role() {
    role=${APP_ROLE:-}
    queue=$(bool_value "${QUEUE_WORKER:-false}") || return 1
    if [ -z "$role" ]; then
        if [ "$queue" = true ]; then role=queue; else role=server; fi
    fi
    case "$role" in
        server | queue | scheduler | migrate | job) echo "$role" ;;
        *) return 1 ;;
    esac
}

# true for an https APP_URL, false otherwise (the app's secure-cookie setting follows it).
url_is_secure() { case "$1" in [Hh][Tt][Tt][Pp][Ss]://*) echo true ;; *) echo false ;; esac }

# A value of the facts' [environment] table with {app_url} and {app_url_secure} filled in.
fill_app_env() {
    value=$1 url=$2
    secure=$(url_is_secure "$url")
    out=""
    while :; do
        case "$value" in
            *"{app_url_secure}"*)
                out="$out${value%%"{app_url_secure}"*}$secure"
                value=${value#*"{app_url_secure}"}
                ;;
            *"{app_url}"*)
                out="$out${value%%"{app_url}"*}$url"
                value=${value#*"{app_url}"}
                ;;
            *) break ;;
        esac
    done
    printf '%s\n' "$out$value"
}

# pgpass escapes \ and : in every field (PostgreSQL docs, "The Password File").
pgpass_field() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/:/\\:/g'; }

# --- settings ------------------------------------------------------------------------------------

# Every setting checked before anything runs: one line per problem on stderr, exit 1 if any.
validate_settings() {
    problems=0
    problem() { warn "Settings: $*"; problems=$((problems + 1)); }
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
        eval "value=\${$name:-}"
        is_uint "$value" || problem "$name must be a whole number (got '$value')"
    done
    if is_uint "${MIGRATION_LOCK_TIMEOUT:-}" && is_uint "${MIGRATION_TIMEOUT:-}" \
        && [ "$MIGRATION_LOCK_TIMEOUT" -lt "$MIGRATION_TIMEOUT" ]; then
        problem "MIGRATION_LOCK_TIMEOUT ($MIGRATION_LOCK_TIMEOUT) must be at least MIGRATION_TIMEOUT ($MIGRATION_TIMEOUT): a replica waiting for the lock must outlast the migration it waits for"
    fi
    is_int "${MIGRATION_LOCK_KEY:-}" || problem "MIGRATION_LOCK_KEY must be an integer (got '${MIGRATION_LOCK_KEY:-}')"
    case "${RUN_SEEDERS:-}" in
        auto | true | force | false) ;;
        *) problem "RUN_SEEDERS must be auto, true, force or false (got '${RUN_SEEDERS:-}')" ;;
    esac
    for name in SKIP_MIGRATIONS QUEUE_WORKER; do
        eval "value=\${$name:-false}"
        bool_value "$value" >/dev/null || problem "$name must be true or false (got '$value')"
    done
    if bool_value "${QUEUE_WORKER:-false}" >/dev/null && ! app_role >/dev/null; then
        problem "APP_ROLE must be server, queue, scheduler, migrate or job (got '${APP_ROLE:-}')"
    fi
    case "${APP_URL:-}" in
        http://?* | https://?*) ;;
        *) problem "APP_URL must be the app's public URL, http://… or https://… (got '${APP_URL:-}')" ;;
    esac
    case "${ACCESS_LOG:-stdout}" in
        stdout | stderr | discard) ;;
        "file /"*[!/])
            case "${ACCESS_LOG#file }" in
                *[!A-Za-z0-9_./-]* | *..*) problem "ACCESS_LOG's file path may hold only letters, digits and _ . / -, and no '..' (got '$ACCESS_LOG')" ;;
            esac
            ;;
        *) problem "ACCESS_LOG must be stdout, stderr, discard or file /<path> (got '${ACCESS_LOG:-}')" ;;
    esac
    case "${SEED_SENTINEL_TABLE:-}" in
        *[!A-Za-z0-9_.]*) problem "the facts' seed.sentinel_table is not a table name ('$SEED_SENTINEL_TABLE')" ;;
    esac
    [ "$problems" -eq 0 ] || { warn "Settings: refusing to start ($problems problem(s) above)"; return 1; }
}

# --- migrations and seeding ------------------------------------------------------------------------

# The plugins whose migrations run after the app's: the facts' list, or "discover": every
# <app>/plugins/<name>/config/Migrations, in name order.
migration_plugins() {
    setting=$1 app=$2
    if [ "$setting" != discover ]; then
        printf '%s\n' "$setting"
        return 0
    fi
    found=""
    for dir in "$app"/plugins/*/config/Migrations; do
        [ -d "$dir" ] || continue
        name=${dir%/config/Migrations}
        found="$found${found:+ }${name##*/}"
    done
    printf '%s\n' "$found"
}

# What to do about seeding, from RUN_SEEDERS, the marker's state (none, started, config1,
# seeded, done) and the sentinel table's rows (a count, or "missing"). Prints one of
#   run started | run seeded | skip <why> | warn <why>
# and exits 0; or prints the refusal and exits 1. durango_seed's states: started -> config1 ->
# seeded -> done; the last step and `done` are one transaction.
seed_plan() {
    run=$1 state=$2 rows=$3
    case "$rows" in
        missing) ;;
        '' | *[!0-9]*)
            echo "unexpected row count '$rows' for the sentinel table; not guessing"
            return 1
            ;;
    esac
    case "$run:$state" in
        false:*) echo "skip RUN_SEEDERS=false" ;;
        force:*) echo "run started" ;;
        true:none) echo "run started" ;;
        true:*)
            echo "RUN_SEEDERS=true refused: this database was seeded already (durango_seed: $state); RUN_SEEDERS=force runs the seeders again"
            return 1
            ;;
        auto:done) echo "skip seeded already (see durango_seed)" ;;
        auto:seeded) echo "run seeded" ;;
        auto:started | auto:config1)
            echo "an earlier seeding stopped part-way (durango_seed state: $state): the seeders may have written some rows. Not seeding again by itself. Recovery (docs/PRODUCTION_DEPLOYMENT.md, Seeding): restore the database from the backup taken before, or empty the seeded tables and start once with RUN_SEEDERS=force"
            return 1
            ;;
        auto:none)
            if [ "$rows" = missing ]; then
                echo "skip no sentinel table after migrations"
            elif [ "$rows" -gt 0 ]; then
                echo "warn the sentinel table has $rows rows but this database has no durango_seed marker (restored from an older backup, or seeded by hand?); leaving it alone. RUN_SEEDERS=force seeds anyway."
            else
                echo "run started"
            fi
            ;;
        *)
            echo "unknown durango_seed state '$state'; not guessing"
            return 1
            ;;
    esac
}

# --- the scheduler -------------------------------------------------------------------------------

# The line of the facts' jobs ("name|schedule|timeout|command") for one job name; exit 1 when
# the facts have no such job.
job_line() {
    found=$(printf '%s\n' "$2" | grep "^$1|" | head -n 1)
    [ -n "$1" ] && [ -n "$found" ] || return 1
    printf '%s\n' "$found"
}

# One cron field against a value: *, n, a-b, */n, a-b/n and lists of them.
cron_field_matches() {
    field=$1 value=$2 low=$3
    value=$(printf '%s' "$value" | sed 's/^0*\([0-9]\)/\1/')
    rest=$field
    while [ -n "$rest" ]; do
        part=${rest%%,*}
        case "$rest" in *,*) rest=${rest#*,} ;; *) rest="" ;; esac
        step=1
        case "$part" in */*) step=${part#*/} part=${part%%/*} ;; esac
        case "$part" in
            '*') from=$low to=999 ;;
            *-*) from=${part%-*} to=${part#*-} ;;
            *) from=$part to=$part ;;
        esac
        if [ "$value" -ge "$from" ] && [ "$value" -le "$to" ] \
            && [ $(((value - from) % step)) -eq 0 ]; then
            return 0
        fi
    done
    return 1
}

# A five-field schedule against a time given as "minute hour day month weekday" (date +'%M %H
# %d %m %w'). As cron: when both day and weekday are restricted, either may match; weekday 7 is
# Sunday too.
cron_matches() {
    schedule=$1
    case $- in *f*) noglob=1 ;; *) noglob=0 ;; esac
    set -f # the fields hold * : never file names
    # shellcheck disable=SC2086 # five words, then the time's five
    set -- $schedule $2
    [ "$noglob" = 1 ] || set +f
    [ "$#" -eq 10 ] || return 2
    cron_field_matches "$1" "$6" 0 || return 1
    cron_field_matches "$2" "$7" 0 || return 1
    cron_field_matches "$4" "$9" 1 || return 1
    dow=${10}
    day_ok=1 dow_ok=1
    cron_field_matches "$3" "$8" 1 && day_ok=0
    { cron_field_matches "$5" "$dow" 0 || { [ "$dow" = 0 ] && cron_field_matches "$5" 7 0; }; } && dow_ok=0
    # as Vixie cron: a field that starts with * does not restrict
    case "$3:$5" in
        '*'*:* | *:'*'*) [ "$day_ok" -eq 0 ] && [ "$dow_ok" -eq 0 ] ;;
        *) [ "$day_ok" -eq 0 ] || [ "$dow_ok" -eq 0 ] ;;
    esac
}

# --- process control -----------------------------------------------------------------------------

# A child that exited stays a zombie until the shell waits for it: read its state instead.
running() {
    state=$(sed 's/.*) \([A-Z]\).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# Run a command in a process group of its own (setsid), so that one signal reaches it and every
# process it starts. Sets CHILD to its process ID (= its group's).
start_group() {
    setsid "$@" &
    CHILD=$!
}

stop_group() {
    kill -TERM "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null || true
}

# Wait for the group CHILD leads, for at most $1 seconds (0: no bound), asking `$2` (a shell
# function; "" for none) every second whether to go on. Exit status: the command's; 124 when the
# bound was reached; 125 when the check failed. Either way the whole group is stopped.
watch_group() {
    bound=$1 check=$2 ticks=0
    while running "$CHILD"; do
        if [ $((ticks % 5)) -eq 4 ]; then # a second has passed
            if [ "$bound" -gt 0 ] && [ $(((ticks + 1) / 5)) -ge "$bound" ]; then
                stop_group "$CHILD"
                wait "$CHILD" 2>/dev/null || true
                return 124
            fi
            if [ -n "$check" ] && ! "$check"; then
                stop_group "$CHILD"
                wait "$CHILD" 2>/dev/null || true
                return 125
            fi
        fi
        sleep 0.2
        ticks=$((ticks + 1))
    done
    status=0
    wait "$CHILD" || status=$?
    return "$status"
}
