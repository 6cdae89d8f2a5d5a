#!/usr/bin/env bash
# Load benchmark (BENCHMARKS.md): release build, the local server on a fresh database, N users
# (default 100) with one connection and one token each, mixed workload for SECONDS (default 30).
#   scripts/bench-load.sh            # USERS=100 SECONDS=30 POOL=16 by default
set -euo pipefail
cd "$(dirname "$0")/.."
users="${USERS:-100}"
seconds="${SECONDS_RUN:-30}"
port="${BENCH_PORT:-8077}"
pool="${POOL:-16}"
db=tasks_bench
cargo build --release --quiet --bin tasks-api --bin loadgen
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" JWT_SECRET="$secret" PORT="$port" \
  DATABASE_POOL_SIZE="$pool" RUST_LOG=error target/release/tasks-api serve &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "server pool: $pool connections; load: $users users x 1 connection, ${seconds}s"
target/release/loadgen --url "http://127.0.0.1:$port" --users "$users" --seconds "$seconds" --secret "$secret"
