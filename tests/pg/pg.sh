#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and benchmarks.
#
#   tests/pg/pg.sh start DIR   initdb into DIR/data (if not yet), start it on
#                              127.0.0.1 at a free port, wait until it accepts
#                              connections, print its URL (one line):
#                              postgres://postgres@127.0.0.1:PORT/postgres
#                              Already running in DIR: just print the URL.
#   tests/pg/pg.sh url DIR     print the URL of the server running in DIR
#   tests/pg/pg.sh stop DIR    stop it (fast mode) and remove DIR
#
# Only loopback TCP (127.0.0.1) and a unix socket inside DIR; trust
# authentication; no system service is used. fsync stays on (durability is
# what the tests check) unless PG_FAST=1, which sets fsync=off,
# synchronous_commit=off and full_page_writes=off for that start.
# The server logs into DIR/log/. PostgreSQL refuses to run as root, so when
# run as root its programs run as the `postgres` system user (PG_USER), and
# DIR is chowned to that user. PG_BIN overrides the directory of the
# PostgreSQL programs (default: /usr/lib/postgresql/15/bin, else PATH).
# Everything but the URL goes to stderr; errors exit non-zero.
set -euo pipefail

PROG=$(basename "$0")
MARKER=.backchannel-pg   # a DIR this script made; `stop` removes only such
PG_USER=${PG_USER:-postgres}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

usage() {
    echo "usage: $PROG start|stop|url DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
CMD=$1
[ -n "$2" ] || usage
# Absolute, so the script works from any current directory (and postgres,
# which runs in its own directory, gets paths that mean the same).
DIR=$(realpath -m -- "$2")
[ "$DIR" != / ] || die "refusing to use / as DIR"
DATA=$DIR/data
LOGDIR=$DIR/log
SOCK=$DIR/sock
PORTFILE=$DIR/port

if [ -z "${PG_BIN:-}" ]; then
    if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
        PG_BIN=/usr/lib/postgresql/15/bin
    elif command -v pg_ctl >/dev/null 2>&1; then
        PG_BIN=$(dirname "$(command -v pg_ctl)")
    else
        die "PostgreSQL programs not found (set PG_BIN to the directory holding pg_ctl)"
    fi
fi
for p in initdb pg_ctl pg_isready; do
    [ -x "$PG_BIN/$p" ] || die "$PG_BIN/$p not found or not executable (set PG_BIN)"
done

# Runs a command as the PostgreSQL user when we are root, else as ourselves.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        id -u "$PG_USER" >/dev/null 2>&1 || die "system user '$PG_USER' does not exist (set PG_USER)"
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

url_for() {
    echo "postgres://postgres@127.0.0.1:$1/postgres"
}

# The server's process id, from its lock file.
server_pid() {
    local pid
    [ -f "$DATA/postmaster.pid" ] || return 1
    pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    echo "$pid"
}

# Whether the server in DIR runs. Not `pg_ctl status` alone: a killed
# server that nobody reaped yet (a zombie, common in containers) still
# answers signal 0, so it would look alive.
# Live (not zombie) processes working in the data directory: a dead
# server's backends.
leftovers() {
    local d pid
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "$(readlink "$d/cwd" 2>/dev/null)" = "$DATA" ] || continue
        grep -q '^State:[[:space:]]*Z' "$d/status" 2>/dev/null && continue
        printf '%s ' "$pid"
    done
}

running() {
    local pid
    pid=$(server_pid) || return 1
    if [ -r "/proc/$pid/status" ]; then
        ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"
    elif [ -d /proc/self ]; then
        return 1
    else
        as_pg "$PG_BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
    fi
}

running_port() {
    [ -f "$PORTFILE" ] || die "$DIR: server running but $PORTFILE is missing"
    local port
    port=$(cat "$PORTFILE")
    [[ "$port" =~ ^[0-9]+$ ]] || die "$PORTFILE does not hold a port number"
    echo "$port"
}

free_port() {
    command -v python3 >/dev/null 2>&1 || die "python3 is needed to pick a free port"
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# One start/stop at a time per DIR.
lock() {
    exec 9>"$DIR/.lock" || die "cannot write $DIR/.lock"
    flock 9 || die "cannot lock $DIR/.lock"
}

start() {
    if [ -e "$DIR" ] && [ ! -d "$DIR" ]; then
        die "$DIR exists and is not a directory"
    fi
    if [ -d "$DIR" ] && [ ! -e "$DIR/$MARKER" ] && [ -n "$(ls -A "$DIR")" ]; then
        die "$DIR exists, is not empty and was not made by $PROG; pick another DIR"
    fi
    mkdir -p "$DIR" || die "cannot create $DIR"
    touch "$DIR/$MARKER"
    lock
    if running; then
        url_for "$(running_port)"
        return 0
    fi
    mkdir -p "$LOGDIR" "$SOCK"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R "$PG_USER": "$DIR" || die "cannot chown $DIR to $PG_USER"
    fi
    chmod 700 "$SOCK"
    as_pg test -w "$DIR" -a -x "$DIR" \
        || die "$DIR is not writable by user $PG_USER (a parent directory may not be searchable; try a DIR under /tmp)"
    # The socket path (DIR/sock/.s.PGSQL.PORT) must fit in sun_path.
    [ ${#SOCK} -le 90 ] || die "$DIR is too long a path for a unix socket inside it; use a shorter DIR"

    if [ -f "$DATA/postmaster.pid" ]; then
        # running() said no: the lock file of a server that died (killed,
        # machine restarted). PostgreSQL recovers from its WAL on start. Its
        # leftover processes exit when they notice; the lock file goes only
        # once none is left, since two servers on one data directory would
        # corrupt it.
        local i
        for i in $(seq 1 100); do
            [ -z "$(leftovers)" ] && break
            sleep 0.1
        done
        [ -z "$(leftovers)" ] \
            || die "processes of a dead server still use $DATA (pids $(leftovers)); stop them first"
        echo "$PROG: removing the stale lock file of a server that is gone" >&2
        rm -f "$DATA/postmaster.pid"
    fi
    if [ ! -f "$DATA/PG_VERSION" ]; then
        rm -rf "$DATA"
        as_pg "$PG_BIN/initdb" -D "$DATA" --auth=trust --username=postgres \
            --encoding=UTF8 --locale=C --no-sync >"$LOGDIR/initdb.log" 2>&1 \
            || die "initdb failed; see $LOGDIR/initdb.log: $(tail -n 5 "$LOGDIR/initdb.log")"
        as_pg tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# tests/pg/pg.sh: a throwaway server for tests, reachable on loopback only.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
max_connections = 400
logging_collector = off
log_line_prefix = '%m [%p] '
EOF
    fi

    local opts=""
    if [ "${PG_FAST:-0}" = 1 ]; then
        opts="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    local port attempt
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        # -p on the command line: a restart picks a new free port.
        # 9>&-: the server must not inherit (and hold forever) the lock.
        if as_pg "$PG_BIN/pg_ctl" start -D "$DATA" -l "$LOGDIR/postgres.log" -w -t 60 \
            -o "-p $port $opts" >>"$LOGDIR/pg_ctl.log" 2>&1 9>&-; then
            echo "$port" >"$PORTFILE"
            break
        fi
        if running; then
            as_pg "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -w >>"$LOGDIR/pg_ctl.log" 2>&1 || true
        fi
        port=""
        # The port may have been taken between picking and binding: retry
        # with another; any other failure shows in the log and repeats.
    done
    [ -n "$port" ] || die "PostgreSQL did not start; see $LOGDIR/postgres.log: $(tail -n 5 "$LOGDIR/postgres.log" 2>/dev/null)"

    local i
    for i in $(seq 1 300); do
        if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
            url_for "$port"
            return 0
        fi
        sleep 0.1
    done
    die "PostgreSQL started but does not accept connections on 127.0.0.1:$port; see $LOGDIR/postgres.log"
}

stop() {
    if [ ! -e "$DIR" ]; then
        echo "$PROG: $DIR does not exist; nothing to stop" >&2
        return 0
    fi
    [ -e "$DIR/$MARKER" ] || die "$DIR was not made by $PROG; not stopping or removing it"
    lock
    if running; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >>"$LOGDIR/pg_ctl.log" 2>&1 \
            || die "pg_ctl stop failed; see $LOGDIR/pg_ctl.log"
    fi
    rm -rf -- "$DIR" || die "cannot remove $DIR"
}

url() {
    [ -d "$DIR" ] || die "$DIR does not exist"
    running || die "no PostgreSQL is running in $DIR"
    url_for "$(running_port)"
}

case "$CMD" in
    start) start ;;
    stop) stop ;;
    url) url ;;
    *) usage ;;
esac
