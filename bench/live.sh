#!/usr/bin/env bash
# Benchmark of the live feed: N WebSocket subscribers on `category:project` while projects are
# updated at R events/s for S seconds; delivery latency (PUT sent → message received), the
# server's CPU and memory. Prints one table.
#
#   bash bench/live.sh [seconds] [subscribers] [rate]      (defaults 20, 1000, 200)
#
# Needs PostgreSQL at 127.0.0.1:5432 (started if installed but stopped); builds the release
# binaries (`atelier` and `live-bench`). Uses a scratch database `atelier_bench_live`, dropped
# and recreated; the server runs without builds (ATELIER_BUILD_DRIVER=none). Environment:
# BENCH_PORT the server's port (18081), BENCH_PROJECTS how many projects the writes spread over
# (1000; with few, concurrent updates of one project conflict), BENCH_LOG a file to keep the
# server's log in.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-20}"
SUBSCRIBERS="${2:-1000}"
RATE="${3:-200}"
PROJECTS="${BENCH_PROJECTS:-1000}"
DB=atelier_bench_live
PORT="${BENCH_PORT:-18081}"
BASE="http://127.0.0.1:$PORT"
WORK="$(mktemp -d)"
trap '{ [ -z "${SERVER_PID:-}" ] || kill "$SERVER_PID" 2>/dev/null || true; }; [ -n "${BENCH_LOG:-}" ] && cp "$WORK/server.log" "$BENCH_LOG"; rm -rf "$WORK"' EXIT

# One descriptor per connection on each side (server and bench), plus the pools.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((SUBSCRIBERS + 256)) ]; then
    echo "ulimit -n is $(ulimit -n): too few descriptors for $SUBSCRIBERS subscribers" >&2
    exit 1
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    sleep 2
fi
echo "cargo build --release…" >&2
# The same command as a plain build at the root (the workspace's default members are the server
# and the bench binaries): after `cargo build --release` it compiles nothing.
cargo build --release -q
TARGET="${CARGO_TARGET_DIR:-target}/release"

PGOPTIONS=--client-min-messages=warning psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export ATELIER_ADMIN_PASSWORD=bench-password ATELIER_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn
export ATELIER_BUILD_DRIVER=none
"$TARGET/atelier" serve >"$WORK/server.log" 2>&1 &
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

# The bench creates the projects, opens the subscribers, writes, and prints the table.
status=0
"$TARGET/live-bench" --base-url "$BASE" --subscribers "$SUBSCRIBERS" --rate "$RATE" \
    --seconds "$SECONDS_PER_RUN" --projects "$PROJECTS" --server-pid "$SERVER_PID" \
    --clk-tck "$(getconf CLK_TCK)" || status=$?
printf '\nmachine: %s cores, %s; %s\n' "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" "$(date -u +%F)"

warnings=$(grep -cE 'WARN|ERROR' "$WORK/server.log" || true)
if [ "$warnings" != 0 ]; then
    echo "server log: $warnings warning or error lines; the first ones:" >&2
    grep -E 'WARN|ERROR' "$WORK/server.log" | head -20 >&2
fi
exit "$status"
