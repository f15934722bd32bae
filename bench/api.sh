#!/usr/bin/env bash
# Benchmark of the HTTP API: project updates (commands), project-list queries and build triggers
# (simulated driver) at 32 concurrent connections, projection lag, and the server's memory; then,
# in the same run and on the same database, the limits these rows are read against: a bare
# actix-web + sqlx server (`bare-server`: one INSERT per update, a page by the cheapest correct
# SQL and by Atelier's own SQL) under the same wrk settings, and pgbench running both page
# statements. Prints one table.
#
#   bash bench/api.sh [seconds]      (default 20; nine runs of that length)
#   ATELIER_BIN=/path/to/atelier bash bench/api.sh   (benchmark that binary's API instead)
#
# Needs PostgreSQL at 127.0.0.1:5432 (started if installed but stopped) and pgbench; installs wrk
# from Debian's packages if missing; runs `cargo build --release` (the same command as a plain
# build at the repository's root: nothing to compile after one). Uses a scratch database
# `atelier_bench_api`, dropped and recreated; BENCH_PORT (18080) is Atelier's port, 10 more
# bare-server's.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-20}"
CONNECTIONS=32
PROJECTS=1000
DB=atelier_bench_api
PORT="${BENCH_PORT:-18080}"
BASE="http://127.0.0.1:$PORT"
WORK="$(mktemp -d)"
BARE_PORT=$((PORT + 10))
BARE="http://127.0.0.1:$BARE_PORT"
SERVER_PID="" BARE_PID=""
stop() { # pid: SIGTERM, then SIGKILL after 30 s
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}
trap 'stop "$SERVER_PID"; stop "$BARE_PID"; rm -rf "$WORK"' EXIT

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    sleep 2
fi
if ! command -v wrk >/dev/null; then
    echo "installing wrk (Debian package)" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
# The same command as a plain build at the root (the workspace's default members are the server
# and the bench binaries): after `cargo build --release` it compiles nothing.
echo "cargo build --release…" >&2
cargo build --release -q
TARGET="${CARGO_TARGET_DIR:-target}/release"
# ATELIER_BIN benchmarks another build (a previous commit's, to compare in the same session);
# bare-server is always this tree's.
BIN="${ATELIER_BIN:-$TARGET/atelier}"

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

# The limits, in the same run and on the same database (the same 1,000 projects). Atelier's server
# stops first (with the builds it still has queued), so that bare-server and pgbench have the
# machine as Atelier had it: wrk, one server, PostgreSQL.
echo "stopping Atelier's server…" >&2
stop "$SERVER_PID"
SERVER_PID=""
psql() { command psql -X -q -At -h 127.0.0.1 -U postgres -d "$DB" "$@"; }
ORG_ID=$(psql -c "SELECT m.org_id FROM memberships m JOIN users u ON u.id = m.user_id
    WHERE lower(u.username) = 'admin' ORDER BY m.since LIMIT 1")
in_org=$(psql -c "SELECT count(*) FROM projects WHERE org_id = '$ORG_ID'")
if [ "$in_org" != "$PROJECTS" ]; then
    echo "the admin's organization $ORG_ID has $in_org projects, not $PROJECTS" >&2
    exit 1
fi
"$TARGET/bare-server" --listen "127.0.0.1:$BARE_PORT" --database-url "$DATABASE_URL" --org-id "$ORG_ID" \
    >"$WORK/bare.log" 2>&1 &
BARE_PID=$!
for _ in $(seq 1 100); do curl -fs "$BARE/health" >/dev/null 2>&1 && break; sleep 0.1; done
if ! curl -fs "$BARE/health" >/dev/null; then
    echo "bare-server did not start; its log:" >&2
    cat "$WORK/bare.log" >&2
    exit 1
fi

cat bench/api/bare-update.lua bench/api/report.lua >"$WORK/bare-update.lua"
cat bench/api/bare-list.lua bench/api/report.lua >"$WORK/bare-list.lua"
# The pages list.lua asks for: random pages of 20 by name, one in four searched for "bench-01".
# pgbench cannot bind a NULL: without a search, Atelier's statement has NULL::text in place of $2.
PAGE_COLUMNS="id, name, repo_url, build_command, revision, created_at, updated_at, last_build_status, last_build_id, last_build_at"
ATELIER_COLUMNS="id, org_id, name, repo_url, build_command, revision, created_at, updated_at, created_by, last_build_status, last_build_id, last_build_at, name_key AS keyset_key"
cat >"$WORK/atelier.sql" <<SQL
\set page random(1, :pages)
\set offset (:page - 1) * 20
\set cap 10000
\set s random(1, 4)
\if :s = 1
SELECT $ATELIER_COLUMNS, (SELECT count(*) FROM (SELECT 1 FROM projects WHERE org_id = :org AND name ILIKE :pat LIMIT :cap) AS bounded) AS total FROM projects WHERE org_id = :org AND name ILIKE :pat ORDER BY name_key ASC, id ASC LIMIT 21 OFFSET :offset;
\if :page > 1
SELECT count(*) FROM (SELECT 1 FROM projects WHERE org_id = :org AND name ILIKE :pat LIMIT :cap) AS bounded;
\endif
\else
SELECT $ATELIER_COLUMNS, (SELECT COALESCE((SELECT projects FROM project_counts WHERE org_id = :org), 0)) AS total FROM projects WHERE org_id = :org ORDER BY name_key ASC, id ASC LIMIT 21 OFFSET :offset;
\endif
SQL
cat >"$WORK/cheapest.sql" <<SQL
\set page random(1, :pages)
\set offset (:page - 1) * 20
\set s random(1, 4)
\if :s = 1
SELECT $PAGE_COLUMNS FROM projects WHERE org_id = :org AND name ILIKE :pat ORDER BY name_key, id LIMIT :per_page OFFSET :offset;
\else
SELECT $PAGE_COLUMNS FROM projects WHERE org_id = :org ORDER BY name_key, id LIMIT :per_page OFFSET :offset;
\endif
SQL
# pgbench at wrk's concurrency; its per-transaction log gives the percentiles.
pgbench_run() { # name → "RESULT rps=… p50=… p99=… requests=… errors=…"
    command pgbench -n -M prepared -c "$CONNECTIONS" -j2 -T "$SECONDS_PER_RUN" -h 127.0.0.1 -U postgres \
        -D org="$ORG_ID" -D pat=%bench-01% -D pages="$PAGES" -D per_page=20 \
        -l --log-prefix="$WORK/log-$1" -f "$WORK/$1.sql" "$DB" >"$WORK/pgbench-$1.out" 2>&1 \
        || { cat "$WORK/pgbench-$1.out" >&2; return 1; }
    cat "$WORK/log-$1".* | awk '{print $3}' | sort -n >"$WORK/latency-$1"
    awk -v tps="$(grep -oE '^tps = [0-9.]+' "$WORK/pgbench-$1.out" | head -1 | cut -d' ' -f3)" \
        -v failed="$(grep -oE 'number of failed transactions: [0-9]+' "$WORK/pgbench-$1.out" | grep -oE '[0-9]+$' || echo 0)" \
        '{ a[NR] = $1 } END {
            p50 = a[int((NR * 50 + 99) / 100)]; p99 = a[int((NR * 99 + 99) / 100)];
            printf "RESULT rps=%.0f p50=%.2f p99=%.2f requests=%d errors=%d\n", tps, p50 / 1000, p99 / 1000, NR, failed
        }' "$WORK/latency-$1"
}
bare_wrk() { # lua script, [list path]
    LIST_PATH="${2:-}" wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/$1" "$BARE" | grep '^RESULT'
}

echo "bare INSERT: ${SECONDS_PER_RUN}s at $CONNECTIONS connections…" >&2
BARE_UPDATE=$(bare_wrk bare-update.lua)
echo "bare list, Atelier's SQL: ${SECONDS_PER_RUN}s at $CONNECTIONS connections…" >&2
BARE_ATELIER=$(bare_wrk bare-list.lua /bare/projects-as-atelier)
echo "pgbench, Atelier's list SQL: ${SECONDS_PER_RUN}s at $CONNECTIONS clients…" >&2
PG_ATELIER=$(pgbench_run atelier)
# Both run on Atelier's own indexes: `projects_org_name_id (org_id, name_key, id)` serves
# ORDER BY name_key, id.
psql -c "ANALYZE projects"
echo "bare list, cheapest SQL: ${SECONDS_PER_RUN}s at $CONNECTIONS connections…" >&2
BARE_LIST=$(bare_wrk bare-list.lua /bare/projects)
echo "pgbench, cheapest page SQL: ${SECONDS_PER_RUN}s at $CONNECTIONS clients…" >&2
PG_CHEAPEST=$(pgbench_run cheapest)
stop "$BARE_PID"
BARE_PID=""

field() { echo "$1" | grep -oE "$2=[0-9.]+" | cut -d= -f2; }
check() { # awk condition → PASS or MISS
    if awk "BEGIN { exit !($1) }"; then echo PASS; else echo MISS; fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
rate() { awk -v n="$1" 'BEGIN { printf "%.0f", n }'; }
latency() { printf 'p50 %s ms, p99 %s ms, %s errors' "$(field "$1" p50)" "$(field "$1" p99)" "$(field "$1" errors)"; }
# An API row: its rate against a limit, and its three goals.
api_row() { # label, wrk result, min rate, limit result, limit's name
    local rps limit r
    rps=$(field "$2" rps)
    limit=$(rate "$(field "$4" rps)")
    r=$(ratio "$rps" "$limit")
    printf '| %s, %d conns, %ss | %s req/s = %s × %s (%s/s), %s | ≥ %s/s: %s; ≥ 0.5 × %s: %s; p99 ≤ 50 ms: %s |\n' \
        "$1" "$CONNECTIONS" "$SECONDS_PER_RUN" "$rps" "$r" "$5" "$limit" "$(latency "$2")" \
        "$3" "$(check "$rps >= ${3//,/}")" "$5" "$(check "$r >= 0.5")" "$(check "$(field "$2" p99) <= 50")"
}
# A limit's row: what it must reach for its API row's goals to be reachable.
limit_row() { # label, result, unit, min rate
    printf '| %s, %d %s, %ss | %s %s/s, %s | ≥ %s/s, p99 ≤ 50 ms: %s |\n' \
        "$1" "$CONNECTIONS" "$([ "$3" = tx ] && echo clients || echo conns)" "$SECONDS_PER_RUN" \
        "$(rate "$(field "$2" rps)")" "$3" "$(latency "$2")" "$4" \
        "$(check "$(field "$2" rps) >= ${4//,/} && $(field "$2" p99) <= 50")"
}

printf '\n| measure | result | goal |\n|---|---|---|\n'
api_row "project updates (PUT)" "$UPDATE" 2,000 "$BARE_UPDATE" "the bare handler"
limit_row "bare handler: JSON body → 1 INSERT (PUT /bare/items/{id})" "$BARE_UPDATE" req 4,000
api_row "project lists (GET, 20/page)" "$LIST" 5,000 "$PG_CHEAPEST" "pgbench cheapest"
limit_row "pgbench: cheapest correct page SQL" "$PG_CHEAPEST" tx 10,000
limit_row "bare handler: cheapest page SQL (GET /bare/projects)" "$BARE_LIST" req 5,000
limit_row "pgbench: Atelier's list SQL (OFFSET; kept total, or a bounded count when searched)" "$PG_ATELIER" tx 10,000
limit_row "bare handler: Atelier's list SQL (GET /bare/projects-as-atelier)" "$BARE_ATELIER" req 5,000
printf '| build triggers (POST /projects/{id}/build, simulated), %d conns, %ss | %s req/s = %s × the bare handler, %s | ≥ 2,000/s: %s; p99 ≤ 50 ms: %s |\n' \
    "$CONNECTIONS" "$SECONDS_PER_RUN" "$(field "$TRIGGER" rps)" "$(ratio "$(field "$TRIGGER" rps)" "$(field "$BARE_UPDATE" rps)")" \
    "$(latency "$TRIGGER")" "$(check "$(field "$TRIGGER" rps) >= 2000")" "$(check "$(field "$TRIGGER" p99) <= 50")"
printf '| projection lag (append → read model) | p50 %s ms, p99 %s ms | p99 ≤ 100 ms: %s |\n' "$(lag 0.5)" "$(lag 0.99)" \
    "$(check "$(lag 0.99) <= 100")"
printf '| server RSS | %d MB now, %d MB peak | ≤ 150 MB: %s |\n' $((RSS_KB / 1024)) $((HWM_KB / 1024)) \
    "$(check "$HWM_KB <= 150 * 1024")"
printf '\nmachine: %s cores, %s; %s\n' "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" "$(date -u +%F)"
