#!/usr/bin/env bash
# Benchmark of the cameras' pipelines: N synthetic cameras (ffmpeg's lavfi, a white square
# crossing a black 640x360 frame at 5 fps) with motion detection on, and S WebSocket subscribers
# watching their thumbnails and detections; frames processed per second, decode and detection
# latency p99, `new_event` delivery p99, thumbnails delivered, the server's CPU and RSS and its
# ffmpeg processes' CPU. Prints one table.
#
#   bash bench/cameras.sh [seconds] [cameras] [subscribers]      (defaults 60, 8, 50)
#
# Needs PostgreSQL at 127.0.0.1:5432 (started if installed but stopped) and ffmpeg (installed
# from Debian if missing); builds the release binaries (`atelier` and `camera-bench`). Uses a
# scratch database `atelier_bench_cameras`, dropped and recreated; the server runs without builds
# and environments (ATELIER_BUILD_DRIVER=none ATELIER_VENV_CONCURRENCY=0). Environment:
# BENCH_PORT the server's port (18082), BENCH_FPS each camera's frames per second (5),
# BENCH_THUMBNAIL_FPS thumbnails per second to each watcher (1), BENCH_LOG a file to keep the
# server's log in, ATELIER_BIN a server binary to use instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-60}"
CAMERAS="${2:-8}"
SUBSCRIBERS="${3:-50}"
FPS="${BENCH_FPS:-5}"
THUMBNAIL_FPS="${BENCH_THUMBNAIL_FPS:-1}"
DB=atelier_bench_cameras
PORT="${BENCH_PORT:-18082}"
BASE="http://127.0.0.1:$PORT"
WORK="$(mktemp -d)"
trap '{ [ -z "${SERVER_PID:-}" ] || kill "$SERVER_PID" 2>/dev/null || true; }; [ -n "${BENCH_LOG:-}" ] && cp "$WORK/server.log" "$BENCH_LOG"; rm -rf "$WORK"' EXIT

if ! command -v ffmpeg >/dev/null; then
    echo "installing ffmpeg (Debian)…" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q ffmpeg >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ffmpeg >/dev/null; }
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
ATELIER_BIN="${ATELIER_BIN:-$TARGET/atelier}"

PGOPTIONS=--client-min-messages=warning psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export ATELIER_ADMIN_PASSWORD=bench-password ATELIER_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn
export ATELIER_BUILD_DRIVER=none ATELIER_VENV_CONCURRENCY=0
"$ATELIER_BIN" serve >"$WORK/server.log" 2>&1 &
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

# The bench creates the cameras, opens the subscribers, starts the cameras, measures, and prints
# the table; it stops the cameras at the end.
status=0
"$TARGET/camera-bench" --base-url "$BASE" --cameras "$CAMERAS" --fps "$FPS" \
    --subscribers "$SUBSCRIBERS" --seconds "$SECONDS_PER_RUN" --thumbnail-fps "$THUMBNAIL_FPS" \
    --server-pid "$SERVER_PID" --clk-tck "$(getconf CLK_TCK)" || status=$?
printf '\nmachine: %s cores, %s; %s; %s\n' "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" \
    "$(ffmpeg -hide_banner -version | head -1 | cut -d' ' -f1-3)" "$(date -u +%F)"

if [ "$status" != 0 ]; then
    echo "the bench failed; the server's log:" >&2
    cat "$WORK/server.log" >&2
else
    warnings=$(grep -cE 'WARN|ERROR' "$WORK/server.log" || true)
    if [ "$warnings" != 0 ]; then
        echo "server log: $warnings warning or error lines; the first ones:" >&2
        grep -E 'WARN|ERROR' "$WORK/server.log" | head -20 >&2
    fi
fi
exit "$status"
