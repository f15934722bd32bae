#!/usr/bin/env bash
# Benchmark of deployments:
#  1. creations (POST /deployments) at 32 connections with the simulated driver, its staged
#     durations at 0 so that what is measured is the platform (rate limit off, a /16 pool), and the time
#     each deployment then took to reach `running` (created_at → deployed_at, from the read model);
#  2. the process driver's time to `running` for a static site cloned from a local repository,
#     against the same clone, build and start run by hand (until the app answers HTTP).
# Prints one table.
#
#   bash bench/deploy.sh [seconds] [runs]      (defaults 20 and 5)
#   ATELIER_BIN=/path/to/atelier bash bench/deploy.sh
#
# Needs PostgreSQL at 127.0.0.1:5432 (started if installed but stopped), git and python3;
# installs wrk from Debian's packages if missing; builds the release binary. Uses a scratch
# database `atelier_bench_deploy`, dropped and recreated. Sends nothing beyond 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-20}"
RUNS="${2:-5}"
CONNECTIONS=32
DB=atelier_bench_deploy
PORT="${BENCH_PORT:-18081}"
BASE="http://127.0.0.1:$PORT"
WORK="$(mktemp -d)"
cleanup() {
    if [ -n "${SERVER_PID:-}" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    pkill -f "http.server.*--bind 127.0.0.1" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    sleep 2
fi
if ! command -v wrk >/dev/null; then
    echo "installing wrk (Debian package)" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
BIN="${ATELIER_BIN:-${CARGO_TARGET_DIR:-target}/release/atelier}"
if [ -z "${ATELIER_BIN:-}" ]; then
    echo "cargo build --release…" >&2
    # The same command as a plain build at the root (the workspace's default members are the server
    # and the bench binaries): after `cargo build --release` it compiles nothing.
    cargo build --release -q
fi
PSQL=(psql -qAt -h 127.0.0.1 -U postgres)
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export ATELIER_ADMIN_PASSWORD=bench-password ATELIER_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn
export ATELIER_BUILD_DRIVER=none ATELIER_RUNNER_ID=bench

start_server() { # driver-specific variables are in the environment
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    "$BIN" serve >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 150); do curl -fs "$BASE/health" >/dev/null 2>&1 && break; sleep 0.2; done
    TOKEN=$(curl -fs -X POST "$BASE/api/v1/auth/login" -H 'Content-Type: application/json' \
        -d '{"username":"admin","password":"bench-password"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
    export TOKEN
}
stop_server() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }

# 1. Creations with the simulated driver.
ATELIER_DEPLOY_DRIVER=simulated ATELIER_DEPLOY_TIME_SCALE=0 ATELIER_DEPLOY_FAILURE_RATE=0 \
    ATELIER_DEPLOY_CREATIONS_PER_MINUTE=0 ATELIER_DEPLOY_POOL=10.0.0.0/16 start_server
cat bench/api/deploy.lua bench/api/report.lua >"$WORK/deploy.lua"
echo "creations: ${SECONDS_PER_RUN}s at $CONNECTIONS connections…" >&2
CREATE=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/deploy.lua" "$BASE" | grep '^RESULT')
echo "waiting for every deployment to settle…" >&2
SETTLE_START=$(now)
for _ in $(seq 1 1200); do
    left=$("${PSQL[@]}" -d "$DB" -c "SELECT count(*) FROM deployments WHERE status IN ('pending','provisioning','deploying')")
    [ "$left" = "0" ] && break
    sleep 0.5
done
SETTLE=$(echo "$(now) - $SETTLE_START" | bc)
read -r RUNNING P50 P99 MAX <<<"$("${PSQL[@]}" -F' ' -d "$DB" -c "SELECT count(*), \
    round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM deployed_at - created_at)))::numeric, 3), \
    round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM deployed_at - created_at)))::numeric, 3), \
    round(max(extract(epoch FROM deployed_at - created_at))::numeric, 3) \
    FROM deployments WHERE status = 'running'")"
TOTAL=$("${PSQL[@]}" -d "$DB" -c "SELECT count(*) FROM deployments")
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
stop_server

# 2. The process driver against the same steps by hand.
MIRROR="$WORK/mirror"
mkdir -p "$MIRROR/src" "$MIRROR/acme"
echo '<h1>bench</h1>' >"$MIRROR/src/index.html"
git -C "$MIRROR/src" init -q --initial-branch=main
git -C "$MIRROR/src" add index.html
git -C "$MIRROR/src" -c user.name=b -c user.email=b@b commit -qm site
git clone -q --bare "$MIRROR/src" "$MIRROR/acme/site"
answers() { curl -fs -o /dev/null --max-time 1 "$1"; }

echo "by hand: $RUNS runs…" >&2
: >"$WORK/hand.txt"
for i in $(seq 1 "$RUNS"); do
    dir="$WORK/hand-$i"
    t0=$(now)
    git clone -q --depth 1 -- "file://$MIRROR/acme/site" "$dir/app"
    (cd "$dir/app" && sh -c 'true')
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    (cd "$dir/app" && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
    pid=$!
    until answers "http://127.0.0.1:$port/"; do sleep 0.02; done
    echo "$(now) - $t0" | bc >>"$WORK/hand.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true
done

ATELIER_DEPLOY_DRIVER=process ATELIER_DEPLOY_WORK_DIR="$WORK/deployments" \
    ATELIER_DEPLOY_MIRRORS="https://github.com/=file://$MIRROR/" start_server
echo "process driver: $RUNS runs…" >&2
: >"$WORK/process.txt"
for i in $(seq 1 "$RUNS"); do
    t0=$(now)
    id=$(curl -fs -X POST "$BASE/api/v1/deployments" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' \
        -d "{\"name\":\"site-$i\",\"deployment_type\":\"vm\",\"framework\":\"static\",\"github_url\":\"https://github.com/acme/site\",\"resources\":{\"cores\":1,\"memory\":512,\"disk\":10}}" \
        | sed -E 's/.*"id":"([0-9a-f-]{36})".*/\1/')
    end=$(curl -fsN "$BASE/api/v1/deployments/$id/logs?follow=true" -H "Authorization: Bearer $TOKEN" \
        | grep -m1 -A1 '^event: end' | tail -1)
    echo "$(now) - $t0" | bc >>"$WORK/process.txt"
    case "$end" in *'"running"'*) ;; *) echo "deployment $id did not run: $end" >&2; exit 1 ;; esac
    url=$(echo "$end" | sed -E 's/.*"access_url":"([^"]+)".*/\1/')
    answers "$url"
    curl -fs -o /dev/null -X DELETE "$BASE/api/v1/deployments/$id" -H "Authorization: Bearer $TOKEN"
done
stop_server
HAND=$(median <"$WORK/hand.txt")
PROCESS=$(median <"$WORK/process.txt")
field() { echo "$1" | grep -oE "$2=[0-9.]+" | cut -d= -f2; }

printf '\n| measure | result | target |\n|---|---|---|\n'
printf '| deployment creations (POST /deployments, simulated), %d conns, %ss | %s req/s, p50 %s ms, p99 %s ms, %s errors | ≥ 500/s, p99 ≤ 100 ms |\n' \
    "$CONNECTIONS" "$SECONDS_PER_RUN" "$(field "$CREATE" rps)" "$(field "$CREATE" p50)" "$(field "$CREATE" p99)" "$(field "$CREATE" errors)"
printf '| time to running, simulated, stages at 0 (%s of %s running) | p50 %s s, p99 %s s, max %s s; all settled %.1f s after the last creation | p99 ≤ 1 s beyond the backlog |\n' \
    "$RUNNING" "$TOTAL" "$P50" "$P99" "$MAX" "$SETTLE"
printf '| process driver, static site from a local repository, to running (median of %s) | %s s, by hand %s s | ≤ by hand + 1 s |\n' \
    "$RUNS" "$PROCESS" "$HAND"
printf '| server peak RSS (creations) | %d MB | ≤ 150 MB |\n' $((RSS_KB / 1024))
printf '\nmachine: %s cores, %s; %s\n' "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" "$(date -u +%F)"
