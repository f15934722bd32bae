#!/usr/bin/env bash
# Benchmark of the HTTP API: project updates (commands), project-list queries and build triggers
# (simulated driver) at 32 concurrent connections, projection lag, and the server's memory.
# Prints one table.
#
#   bash bench/api.sh [seconds]      (default 20)
#   ATELIER_BIN=/path/to/atelier bash bench/api.sh   (benchmark that binary instead of building)
#
# Needs PostgreSQL at 127.0.0.1:5432 (started if installed but stopped); installs wrk from
# Debian's packages if missing; builds the release binary. Uses a scratch database
# `atelier_bench_api`, dropped and recreated.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-20}"
CONNECTIONS=32
PROJECTS=1000
DB=atelier_bench_api
PORT="${BENCH_PORT:-18080}"
BASE="http://127.0.0.1:$PORT"
WORK="$(mktemp -d)"
trap 'kill "${SERVER_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    sleep 2
fi
if ! command -v wrk >/dev/null; then
    echo "installing wrk (Debian package)" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
# ATELIER_BIN benchmarks another build (a previous commit's, to compare in the same session).
BIN="${ATELIER_BIN:-./target/release/atelier}"
if [ -z "${ATELIER_BIN:-}" ]; then
    echo "building the release binary…" >&2
    cargo build --release -q --bin atelier
fi

psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export ATELIER_ADMIN_PASSWORD=bench-password ATELIER_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn
"$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fs "$BASE/health" >/dev/null 2>&1 && break; sleep 0.2; done

TOKEN=$(curl -fs -X POST "$BASE/api/v1/auth/login" -H 'Content-Type: application/json' \
    -d '{"username":"admin","password":"bench-password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
export TOKEN

echo "creating $PROJECTS projects…" >&2
seq -w 1 "$PROJECTS" | xargs -P 8 -I{} curl -fs -o /dev/null -X POST "$BASE/api/v1/projects" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"name":"bench-{}","repo":"https://example.com/r.git"}'
# Wait until the read model shows them all.
for _ in $(seq 1 100); do
    total=$(curl -fs "$BASE/api/v1/projects?per_page=1" -H "Authorization: Bearer $TOKEN" | grep -oE '"total":[0-9]+' | cut -d: -f2)
    [ "$total" = "$PROJECTS" ] && break
    sleep 0.1
done
: >"$WORK/ids.txt"
for page in $(seq 1 $((PROJECTS / 100))); do
    curl -fs "$BASE/api/v1/projects?per_page=100&page=$page&sort=name" -H "Authorization: Bearer $TOKEN" \
        | grep -oE '"id":"[0-9a-f-]{36}"' | cut -d'"' -f4 >>"$WORK/ids.txt"
done
# Rename every project to bench-<id> first, so updates never change a name.
while read -r id; do
    curl -fs -o /dev/null -X PUT "$BASE/api/v1/projects/$id" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -d "{\"name\":\"bench-$id\",\"repo\":\"https://example.com/r.git\"}"
done <"$WORK/ids.txt"
export IDS_FILE="$WORK/ids.txt" PAGES=$((PROJECTS / 20))

# wrk takes one script: merge the request script with the reporter.
cat bench/api/update.lua bench/api/report.lua >"$WORK/update.lua"
cat bench/api/list.lua bench/api/report.lua >"$WORK/list.lua"
cat bench/api/trigger.lua bench/api/report.lua >"$WORK/trigger.lua"
echo "updates: ${SECONDS_PER_RUN}s at $CONNECTIONS connections…" >&2
UPDATE=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/update.lua" "$BASE" | grep '^RESULT')
echo "queries: ${SECONDS_PER_RUN}s at $CONNECTIONS connections…" >&2
LIST=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/list.lua" "$BASE" | grep '^RESULT')
# Last: the builds it queues keep the runner busy long after.
echo "build triggers: ${SECONDS_PER_RUN}s at $CONNECTIONS connections…" >&2
TRIGGER=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/trigger.lua" "$BASE" | grep '^RESULT')

METRICS=$(curl -fs "$BASE/metrics")
lag() { # quantile
    echo "$METRICS" | grep -E "^atelier_projection_lag_seconds\{.*projection=\"factory.projects\".*quantile=\"$1\"" \
        | awk '{printf "%.1f", $2 * 1000}'
}
RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
HWM_KB=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
field() { echo "$1" | grep -oE "$2=[0-9.]+" | cut -d= -f2; }

printf '\n| measure | result | target |\n|---|---|---|\n'
printf '| project updates (PUT), %d conns, %ss | %s req/s, p50 %s ms, p99 %s ms, %s errors | ≥ 2,000/s, p99 ≤ 50 ms |\n' \
    "$CONNECTIONS" "$SECONDS_PER_RUN" "$(field "$UPDATE" rps)" "$(field "$UPDATE" p50)" "$(field "$UPDATE" p99)" "$(field "$UPDATE" errors)"
printf '| project lists (GET, 20/page), %d conns, %ss | %s req/s, p50 %s ms, p99 %s ms, %s errors | ≥ 5,000/s, p99 ≤ 50 ms |\n' \
    "$CONNECTIONS" "$SECONDS_PER_RUN" "$(field "$LIST" rps)" "$(field "$LIST" p50)" "$(field "$LIST" p99)" "$(field "$LIST" errors)"
printf '| build triggers (POST /projects/{id}/build, simulated), %d conns, %ss | %s req/s, p50 %s ms, p99 %s ms, %s errors | ≥ 2,000/s, p99 ≤ 50 ms |\n' \
    "$CONNECTIONS" "$SECONDS_PER_RUN" "$(field "$TRIGGER" rps)" "$(field "$TRIGGER" p50)" "$(field "$TRIGGER" p99)" "$(field "$TRIGGER" errors)"
printf '| projection lag (append → read model) | p50 %s ms, p99 %s ms | p99 ≤ 100 ms |\n' "$(lag 0.5)" "$(lag 0.99)"
printf '| server RSS | %d MB now, %d MB peak | ≤ 150 MB |\n' $((RSS_KB / 1024)) $((HWM_KB / 1024))
printf '\nmachine: %s cores, %s; %s\n' "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" "$(date -u +%F)"
