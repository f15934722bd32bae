#!/usr/bin/env bash
# Benchmark of Python environments:
#  1. an environment made with pip and five small packages installed, through the API (POST
#     /environments with its packages, followed to its end), against the same commands run by
#     hand (python3.11 -m venv, then pip install), both with a warm cache: the overhead as a
#     ratio of medians, same run;
#  2. 50 installs at once across 50 environments: operations per second, the delivery of
#     `operation:progress` to a live subscriber (p50, p99: from the event's time to its receipt),
#     and the server's peak RSS.
# Prints one table.
#
#   bash bench/venvs.sh [runs]      (default 5)
#   ATELIER_BIN=/path/to/atelier bash bench/venvs.sh
#
# Needs PostgreSQL at 127.0.0.1:5432 (started if installed but stopped), python3.11 with pip
# and network access to the package index (PyPI); builds the release binary. Uses a scratch
# database `atelier_bench_venvs`, dropped and recreated. The live subscriber is a small Python
# script with `websockets` installed into a scratch virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-5}"
CONCURRENT=50
PACKAGES='["six","idna","packaging","attrs","pyparsing"]'
DB=atelier_bench_venvs
PORT="${BENCH_PORT:-18082}"
BASE="http://127.0.0.1:$PORT"
API="$BASE/api/v1"
WORK="$(mktemp -d)"
cleanup() {
    if [ -n "${SERVER_PID:-}" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    sleep 2
fi
BIN="${ATELIER_BIN:-${CARGO_TARGET_DIR:-target}/release/atelier}"
if [ -z "${ATELIER_BIN:-}" ]; then
    echo "cargo build --release…" >&2
    # The same command as a plain build at the root (the workspace's default members are the server
    # and the bench binaries): after `cargo build --release` it compiles nothing.
    cargo build --release -q
fi
PY=$(command -v python3.11 || command -v python3)
PSQL=(psql -qAt -h 127.0.0.1 -U postgres)
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export ATELIER_ADMIN_PASSWORD=bench-password ATELIER_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn
export ATELIER_BUILD_DRIVER=none ATELIER_DEPLOY_DRIVER=none ATELIER_RUNNER_ID=bench
export ATELIER_VENV_DATA_DIR="$WORK/data" ATELIER_VENV_CACHE_DIR="$WORK/cache"
export ATELIER_VENV_CONCURRENCY=$CONCURRENT
"$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 150); do curl -fs "$BASE/health" >/dev/null 2>&1 && break; sleep 0.2; done
TOKEN=$(curl -fs -X POST "$API/auth/login" -H 'Content-Type: application/json' \
    -d '{"username":"admin","password":"bench-password"}' | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
AUTH="Authorization: Bearer $TOKEN"
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
json() { "$PY" -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# Follows an operation's stream to its end; prints the end's status.
follow() {
    curl -fsN -H "$AUTH" "$API/operations/$1/stream" | grep -m1 -A1 '^event: end' | tail -1 |
        sed -E 's/.*"status":"([a-z]+)".*/\1/'
}

# An environment with the five packages through the API; its seconds.
through_api() {
    local t0 op status
    t0=$(now)
    op=$(curl -fs -X POST "$API/environments" -H "$AUTH" -H 'Content-Type: application/json' \
        -d "{\"name\":\"$1\",\"python_version\":\"3.11\",\"backend\":\"pip\",\"packages\":$PACKAGES}" | json '["operation_id"]')
    status=$(follow "$op")
    [ "$status" = "completed" ] || { echo "$1: $status" >&2; exit 1; }
    echo "$(now) - $t0" | bc
}

# The same by hand, with a warm cache of its own; its seconds.
by_hand() {
    local t0 dir="$WORK/hand/$1"
    t0=$(now)
    "$PY" -m venv "$dir"
    PIP_CACHE_DIR="$WORK/hand-cache" PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$dir/bin/python" -m pip install -q six idna packaging attrs pyparsing
    echo "$(now) - $t0" | bc
}

echo "warming the caches…" >&2
through_api warm >/dev/null
by_hand warm >/dev/null
echo "1. $RUNS environments with five packages, each way…" >&2
: >"$WORK/api.txt"; : >"$WORK/hand.txt"
for i in $(seq 1 "$RUNS"); do
    through_api "api-$i" >>"$WORK/api.txt"
    by_hand "hand-$i" >>"$WORK/hand.txt"
done
API_MEDIAN=$(median <"$WORK/api.txt")
HAND_MEDIAN=$(median <"$WORK/hand.txt")

echo "2. $CONCURRENT installs at once across $CONCURRENT environments…" >&2
"$PY" -m venv "$WORK/ws-venv" && "$WORK/ws-venv/bin/python" -m pip install -q websockets >/dev/null
for i in $(seq 1 "$CONCURRENT"); do
    curl -fs -X POST "$API/environments" -H "$AUTH" -H 'Content-Type: application/json' \
        -d "{\"name\":\"c-$i\",\"python_version\":\"3.11\",\"backend\":\"pip\"}" | json '["operation_id"]'
done >"$WORK/creations.txt"
while read -r op; do follow "$op" >/dev/null; done <"$WORK/creations.txt"
cat >"$WORK/subscriber.py" <<'PY'
import asyncio, datetime, json, sys, time
import websockets

async def main(url, expected, out):
    async with websockets.connect(url) as ws:
        await ws.recv()  # connected
        await ws.send(json.dumps({"type": "subscribe", "channels": ["category:operation"]}))
        await ws.recv()  # subscribed
        print("ready", flush=True)
        latencies, completed = [], 0
        while completed < expected:
            m = json.loads(await ws.recv())
            if m.get("type") == "operation:progress":
                sent = datetime.datetime.fromisoformat(m["occurred_at"].replace("Z", "+00:00"))
                latencies.append((datetime.datetime.now(datetime.timezone.utc) - sent).total_seconds() * 1000)
            elif m.get("type") in ("operation:completed", "operation:failed"):
                completed += 1
        latencies.sort()
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
        with open(out, "w") as f:
            f.write(f"{len(latencies)} {pick(0.5):.1f} {pick(0.99):.1f}\n")

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
PY
"$WORK/ws-venv/bin/python" "$WORK/subscriber.py" "ws://127.0.0.1:$PORT/ws?access_token=$TOKEN" \
    "$CONCURRENT" "$WORK/latency.txt" >"$WORK/subscriber.out" &
SUB_PID=$!
for _ in $(seq 1 100); do grep -q ready "$WORK/subscriber.out" 2>/dev/null && break; sleep 0.1; done
T0=$(now)
seq 1 "$CONCURRENT" | xargs -P "$CONCURRENT" -I{} curl -fs -o /dev/null -X POST "$API/environments/c-{}/packages" \
    -H "$AUTH" -H 'Content-Type: application/json' -d '{"packages":["six"],"upgrade":true}'
wait "$SUB_PID"
ELAPSED=$(echo "$(now) - $T0" | bc)
read -r PROGRESS P50 P99 <"$WORK/latency.txt"
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
OPS=$(echo "scale=2; $CONCURRENT / $ELAPSED" | bc)
RATIO=$(echo "scale=2; $API_MEDIAN / $HAND_MEDIAN" | bc)

printf '\n| measure | result | target |\n|---|---|---|\n'
printf '| environment + 5 packages (pip, warm cache), through the API vs by hand (median of %s) | %.2f s vs %.2f s: ratio %s | ≤ 1.5 |\n' \
    "$RUNS" "$API_MEDIAN" "$HAND_MEDIAN" "$RATIO"
printf '| %s installs at once across %s environments | %s operations/s (%.1f s in all) | |\n' \
    "$CONCURRENT" "$CONCURRENT" "$OPS" "$ELAPSED"
printf '| operation:progress delivery to a live subscriber (%s messages) | p50 %s ms, p99 %s ms | p99 ≤ 100 ms |\n' \
    "$PROGRESS" "$P50" "$P99"
printf '| server peak RSS | %d MB | ≤ 150 MB |\n' $((RSS_KB / 1024))
printf '\nmachine: %s cores, %s; %s\n' "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" "$(date -u +%F)"
