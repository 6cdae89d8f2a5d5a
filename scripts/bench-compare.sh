#!/usr/bin/env bash
# A/B load comparison (BENCHMARKS.md "Exactly-once writes: load"): two builds of the local
# server, the same load generator, runs alternated so machine noise hits both alike.
#   scripts/bench-compare.sh BEFORE_BIN AFTER_BIN      # ROUNDS=3 SECS=20 USERS=100 POOL=16
# Prints each run, then the medians of the runs and their ratios (after / before).
# Build a "before" binary from another commit with, e.g.:
#   git worktree add --detach /tmp/before <commit> && \
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release --bin tasks-api)
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2
rounds=${ROUNDS:-3} secs=${SECS:-20} users=${USERS:-100} pool=${POOL:-16}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet -p tasks-tools --bin loadgen
run() {
  local label=$1 bin=$2 port=$3
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS tasks_compare" >/dev/null 2>&1
  local secret
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/tasks_compare" JWT_SECRET="$secret" \
    PORT="$port" DATABASE_POOL_SIZE="$pool" RUST_LOG=error "$bin" serve >/dev/null 2>&1 &
  local server=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  echo "== $label"
  local report
  report=$("$target/release/loadgen" --url "http://127.0.0.1:$port" --users "$users" \
    --seconds "$secs" --secret "$secret")
  grep -E "requests/s|latency ms" <<<"$report"
  # Where the time went: CPU per request of the server and of its PostgreSQL backends (the
  # pool's connections live for the whole run), seeding included alike for both builds.
  local requests backends
  requests=$(grep -oE "requests: [0-9]+" <<<"$report" | grep -oE "[0-9]+")
  backends=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc \
    "SELECT pid FROM pg_stat_activity WHERE datname = 'tasks_compare'")
  echo "cpu ms/request: server $(cpu_ms "$requests" "$server")  postgres $(cpu_ms "$requests" $backends)"
  kill "$server"; wait "$server" 2>/dev/null || true
}
# Sum of user + system CPU of the given processes, in ms per request.
cpu_ms() {
  local requests=$1 ticks=0; shift
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  awk -v t="$ticks" -v r="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t * 1000 / hz / r }'
}
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
echo "machine: $(nproc) cores; $users users, ${secs}s per run, $rounds rounds"
for _ in $(seq 1 "$rounds"); do
  run before "$before" 8081
  run after "$after" 8082
done | tee "$runs"
# The medians of the runs, and after / before.
awk '
  /^== / { build = $2 }
  /requests\/s:/ { rps[build] = rps[build] " " $4 }
  /latency ms:/ { p95[build] = p95[build] " " $6 }
  /cpu ms\/request:/ { server[build] = server[build] " " $4; pg[build] = pg[build] " " $6 }
  function median(list,   v, n) { n = split(list, v, " "); asort(v); return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }
  END {
    print "median of the runs: | build | requests/s | p95 ms | server cpu ms/request | postgres cpu ms/request |"
    for (i = 1; i <= 2; i++) {
      b = i == 1 ? "before" : "after"
      m[b, 1] = median(rps[b]); m[b, 2] = median(p95[b]); m[b, 3] = median(server[b]); m[b, 4] = median(pg[b])
      printf "| %s | %.0f | %.2f | %.3f | %.3f |\n", b, m[b, 1], m[b, 2], m[b, 3], m[b, 4]
    }
    printf "| after / before | %.3f | %.3f | %.3f | %.3f |\n", m["after", 1] / m["before", 1], m["after", 2] / m["before", 2], m["after", 3] / m["before", 3], m["after", 4] / m["before", 4]
  }' "$runs"
