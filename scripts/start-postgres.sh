#!/usr/bin/env bash
# A throwaway local PostgreSQL for the batch store tests: installs the server when missing (Debian/Ubuntu, as
# root), starts a private cluster (its own data folder and port, separate from any system cluster), creates a
# database, and prints the line that exports its URL:
#
#   eval "$(bash scripts/start-postgres.sh)"     # sets LICHANG_TEST_POSTGRES_URL
#   bash scripts/start-postgres.sh --stop        # stops the cluster (the data folder stays)
#
# Settings: LICHANG_PG_DATA (default /tmp/lichang-pg), LICHANG_PG_PORT (default 54329),
# LICHANG_PG_DB (default lichang_test). Progress goes to standard error, only the export line to standard output.
set -euo pipefail

DATA="${LICHANG_PG_DATA:-/tmp/lichang-pg}"
PORT="${LICHANG_PG_PORT:-54329}"
DB="${LICHANG_PG_DB:-lichang_test}"
USER_NAME=lichang

say() { echo "start-postgres: $*" >&2; }

find_bin() {  # the newest installed server's binaries (Debian keeps them out of PATH)
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$found" ] && [ -x "$found/initdb" ]; then echo "$found"; return; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
    return 1
}

if ! BIN="$(find_bin)"; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing postgresql with apt-get (once)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
        BIN="$(find_bin)" || { say "postgresql installed but initdb not found"; exit 1; }
    else
        say "no PostgreSQL server found; install it (apt-get install postgresql) or run this as root"
        exit 1
    fi
fi

# The server refuses to run as root: as root, run it as the 'postgres' user (created by the Debian package).
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    as_server() { runuser -u postgres -- "$@"; }
else
    as_server() { "$@"; }
fi

if [ "${1:-}" = "--stop" ]; then
    if [ -f "$DATA/PG_VERSION" ]; then as_server "$BIN/pg_ctl" -D "$DATA" -m fast stop >&2 || true; fi
    exit 0
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
    say "creating a cluster in $DATA"
    mkdir -p "$DATA"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$DATA"
    chmod 700 "$DATA"
    as_server "$BIN/initdb" -D "$DATA" -U "$USER_NAME" -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null \
        || as_server "$BIN/initdb" -D "$DATA" -U "$USER_NAME" -A trust -E UTF8 --locale=C --no-sync >/dev/null
fi

if ! as_server "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    say "starting on 127.0.0.1:$PORT"
    # test settings: no fsync (a lost test database costs nothing), socket in the data folder, local TCP only
    as_server "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start \
        -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" >&2 || {
        say "the server did not start; its log:"; tail -n 20 "$DATA/server.log" >&2; exit 1; }
fi

if ! as_server "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    as_server "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" "$DB" >&2
fi

say "ready: database $DB on 127.0.0.1:$PORT"
echo "export LICHANG_TEST_POSTGRES_URL=postgresql://$USER_NAME@127.0.0.1:$PORT/$DB"
