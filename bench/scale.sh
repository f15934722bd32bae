#!/usr/bin/env bash
# What a request costs as an organization grows: at 10³, 10⁵ and 10⁶ projects, p50/p99 of a
# first list page, a deep page by number and by cursor, a search, a single GET, a store append
# and a command, and the projection's catch-up and rebuild rates. Prints one table.
#
#   bash bench/scale.sh [sizes]        (default 1000,100000,1000000; ascending, comma-separated)
#
# Needs PostgreSQL at 127.0.0.1:5432 (started if installed but stopped); builds the release
# binaries (`atelier` and `scale-bench`). Uses a scratch database `atelier_bench_scale`, dropped
# and recreated; the server runs without builds (ATELIER_BUILD_DRIVER=none). The log is filled
# by appending `ProjectCreated` events straight to the store (8 writers) while the server's
# projections follow. Environment: BENCH_PORT the server's port (18082), BENCH_REQUESTS
# sequential requests per measure (200), BENCH_LOG a file to keep the server's log in.
# 10⁶ projects take about a quarter of an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="${1:-1000,100000,1000000}"
REQUESTS="${BENCH_REQUESTS:-200}"
DB=atelier_bench_scale
PORT="${BENCH_PORT:-18082}"
BASE="http://127.0.0.1:$PORT"
BIN="${CARGO_TARGET_DIR:-target}/release"
WORK="$(mktemp -d)"
trap '{ [ -z "${SERVER_PID:-}" ] || kill "$SERVER_PID" 2>/dev/null || true; }; [ -n "${BENCH_LOG:-}" ] && cp "$WORK/server.log" "$BENCH_LOG"; rm -rf "$WORK"' EXIT

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    sleep 2
fi
echo "building the release binaries…" >&2
cargo build --release -q  # the workspace's default members: the server and the bench binaries

PGOPTIONS=--client-min-messages=warning psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export ATELIER_ADMIN_PASSWORD=bench-password ATELIER_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn
export ATELIER_BUILD_DRIVER=none
"$BIN/atelier" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 150); do curl -fs "$BASE/health" >/dev/null 2>&1 && break; sleep 0.2; done
if ! curl -fs "$BASE/health" >/dev/null 2>&1; then
    echo "the server did not become healthy; its log:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi

TOKEN=$(curl -fs -X POST "$BASE/api/v1/auth/login" -H 'Content-Type: application/json' \
    -d '{"username":"admin","password":"bench-password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
export ATELIER_BENCH_TOKEN="$TOKEN"

status=0
"$BIN/scale-bench" --base-url "$BASE" --sizes "$SIZES" --requests "$REQUESTS" || status=$?
printf '\nmachine: %s cores, %s; %s\n' "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" "$(date -u +%F)"

warnings=$(grep -cE 'WARN|ERROR' "$WORK/server.log" || true)
if [ "$warnings" != 0 ]; then
    echo "server log: $warnings warning or error lines; the first ones:" >&2
    grep -E 'WARN|ERROR' "$WORK/server.log" | head -20 >&2
fi
exit "$status"
