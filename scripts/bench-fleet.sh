#!/usr/bin/env bash
# Fleet benchmark (BENCHMARKS.md "Fleet"): the production shape on one machine. The real
# function binaries (release) run under `fleet` — API Gateway + Lambda's concurrency model: one
# request per instance, a cold start when every instance is busy, scale to zero when idle —
# each instance with a pool of ONE connection to a PgBouncer in transaction mode with a small
# server pool, on a fresh database. Then:
#   1. load: N users (default 100), mixed workload for SECONDS_RUN (default 30): req/s,
#      latency, errors, cold starts, peak instances, RSS, and the PostgreSQL server connections
#      (sampled from pg_stat_activity) against the PgBouncer pool;
#   2. burst from zero: once every instance has exited, N users send their first request at
#      the same instant: first-response latency (every one a cold start or a wait for one).
#
#   scripts/bench-fleet.sh    # USERS=100 SECONDS_RUN=30 POOL=8 IDLE_TIMEOUT=10 MAX_INSTANCES= BUILD=1
#
# PgBouncer runs on its own port (PGBOUNCER_PORT, default 6433) with its own directory
# (/tmp/tasks-fleet-pgbouncer): the one scripts/pgbouncer.sh keeps on 6432 is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
users="${USERS:-100}"
seconds="${SECONDS_RUN:-30}"
port="${FLEET_PORT:-8079}"
pool="${POOL:-8}"
idle="${IDLE_TIMEOUT:-10}"
max_instances="${MAX_INSTANCES:-}"
pgb_port="${PGBOUNCER_PORT:-6433}"
burst_seconds="${BURST_SECONDS:-5}"
bin="${CARGO_TARGET_DIR:-target}/release"
db=tasks_fleet
pgb_dir=/tmp/tasks-fleet-pgbouncer
out="${OUT:-/tmp/bench-fleet}/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"

for tool in pgbouncer psql jq curl; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
    { echo "$tool is not installed (pgbouncer: apt-get install pgbouncer)" >&2; exit 1; }
done
if [ "$pgb_port" = 6432 ]; then
  echo "PGBOUNCER_PORT=6432 is scripts/pgbouncer.sh's (CI's); pick another" >&2
  exit 2
fi

# Everything: the eight functions, tasks-api (migrate), fleet and loadgen. BUILD=0 reuses the
# binaries already in $bin (to compare runs of one build while the tree changes).
if [ "${BUILD:-1}" != 0 ]; then
  cargo build --release --quiet --bins
fi

# --- PgBouncer on its own port and directory ---------------------------------------------
pgbouncer() {
  PGBOUNCER_DIR="$pgb_dir" PGBOUNCER_PORT="$pgb_port" PGBOUNCER_POOL="$pool" \
    PGBOUNCER_MAX_CLIENTS=2000 scripts/pgbouncer.sh "$1"
}
pgbouncer start

# --- a fresh database ------------------------------------------------------------------------
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" RUST_LOG=error "$bin/tasks-api" migrate >/dev/null

# --- the fleet -------------------------------------------------------------------------------
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
fleet_args=(--bin-dir "$bin" --listen "127.0.0.1:$port" --idle-timeout "$idle" --quiet)
[ -n "$max_instances" ] && fleet_args+=(--max-instances "$max_instances")
env DATABASE_URL="postgres://postgres@127.0.0.1:$pgb_port/$db" JWT_SECRET="$secret" \
  DATABASE_POOL_SIZE=1 AWS_LAMBDA_LOG_LEVEL=error RUST_LOG=error \
  "$bin/fleet" "${fleet_args[@]}" 2> "$out/fleet.log" &
fleet=$!
sampler=
cleanup() {
  touch "$out/stop-sampling"
  kill "$fleet" 2>/dev/null && wait "$fleet" 2>/dev/null || true
  pgbouncer stop
}
trap cleanup EXIT
stats_url="http://127.0.0.1:$port/_fleet/stats"
for _ in $(seq 1 100); do
  curl -sf "$stats_url" >/dev/null && break
  sleep 0.1
done

# Server connections PgBouncer holds to the database, sampled every 0.25 s by ONE psql session
# (to the `postgres` database, so not counted; a psql per sample costs ~3% of the CPU here).
sample_connections() {
  while [ ! -e "$out/stop-sampling" ] && sleep 0.25; do
    echo "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db';"
  done | psql -h 127.0.0.1 -U postgres -d postgres -At 2>/dev/null
}

report_fleet() { # $1: stats JSON file
  jq -r '"cold starts: \(.cold_starts)  peak instances: \(.peak_instances)  failures: \(.failures)",
    "peak total RSS (sum of VmRSS, sampled): \((.peak_total_rss_kib / 1024 * 10 | round) / 10) MiB",
    "per-instance peak RSS (VmHWM) KiB: p50 \(.peak_rss_kib.p50)  max \(.peak_rss_kib.max)  (\(.peak_rss_kib.n) instances)",
    "per-instance init ms (spawn -> first invocation/next): p50 \(.init_ms.p50)  p95 \(.init_ms.p95)  max \(.init_ms.max)",
    (.functions | to_entries[] |
      "  \(.key): peak \(.value.peak_instances) instances, \(.value.cold_starts) cold starts, \(.value.invocations) invocations, init p50 \(.value.init_ms.p50 // "-") ms, peak RSS max \(.value.peak_rss_kib.max // "-") KiB")' "$1"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "fleet: one request per instance, DATABASE_POOL_SIZE=1, idle timeout ${idle}s${max_instances:+, at most $max_instances instances per function}; PgBouncer transaction mode, server pool $pool"
echo
echo "== load: $users users x 1 connection, ${seconds}s, mixed workload"
sample_connections > "$out/connections.txt" &
sampler=$!
set +e
"$bin/loadgen" --url "http://127.0.0.1:$port" --users "$users" --seconds "$seconds" \
  --secret "$secret" | tee "$out/load.txt"
load_status=${PIPESTATUS[0]}
set -e
touch "$out/stop-sampling"
wait "$sampler" 2>/dev/null || true
curl -sf "$stats_url?reset=1" > "$out/load-fleet.json"
report_fleet "$out/load-fleet.json"
max_conn=$(sort -n "$out/connections.txt" | tail -1)
echo "server connections (pg_stat_activity, datname=$db): max ${max_conn:-?} of a PgBouncer pool of $pool ($(wc -l < "$out/connections.txt") samples)"
psql -h 127.0.0.1 -p "$pgb_port" -U postgres -d pgbouncer -c "SHOW STATS" 2>/dev/null |
  awk -v db="$db" 'NR<=2 || $1==db' > "$out/pgbouncer-stats.txt" || true
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "== burst from zero: waiting for every instance to exit (idle timeout ${idle}s)"
for _ in $(seq 1 600); do
  [ "$(curl -sf "$stats_url" | jq .live_instances)" = 0 ] && break
  sleep 0.2
done
curl -sf "$stats_url?reset=1" > /dev/null
echo "live instances: $(curl -sf "$stats_url" | jq .live_instances); $users users, first request at the same instant"
set +e
"$bin/loadgen" --url "http://127.0.0.1:$port" --users "$users" --seconds "$burst_seconds" \
  --secret "$secret" --seed-tasks 0 --first-response 1 | tee "$out/burst.txt"
burst_status=${PIPESTATUS[0]}
set -e
curl -sf "$stats_url" > "$out/burst-fleet.json"
report_fleet "$out/burst-fleet.json"
echo
echo "results: $out"
[ "$load_status" = 0 ] && [ "$burst_status" = 0 ]
