#!/usr/bin/env bash
# The event-store benchmark: makes sure PostgreSQL is up, builds in release mode (`store-bench`),
# runs it and prints ONE markdown table on stdout (everything else goes to stderr).
#
#   bash bench/store.sh                      # 3 runs of 10 s per measure, medians (~5 min)
#   bash bench/store.sh --runs 1 --seconds 5 # any store-bench option overrides the defaults
#
# The database in --database-url (default postgres://postgres@127.0.0.1:5432/atelier_bench) is
# DROPPED and recreated. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! pg_isready -h 127.0.0.1 -q; then
    echo "store.sh: PostgreSQL is not accepting connections; starting it" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | tail -n 1)" main start >&2
    for _ in $(seq 1 30); do
        pg_isready -h 127.0.0.1 -q && break
        sleep 1
    done
    pg_isready -h 127.0.0.1 >&2
fi

# The same command as a plain build at the root (the workspace's default members are the server
# and the bench binaries): after `cargo build --release` it compiles nothing.
cargo build --release >&2

PGBENCH="${PGBENCH:-$(command -v pgbench || echo /usr/bin/pgbench)}"
export PGBENCH
exec "${CARGO_TARGET_DIR:-target}/release/store-bench" --seconds 10 --runs 3 "$@"
