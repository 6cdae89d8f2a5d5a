#!/usr/bin/env bash
# BENCHMARKS.md "Silent connections": a create whose database connection goes silent after the
# statement arrived (bytes stop both ways, socket open), N times on a warm pool of one, and warm
# creates without a fault for scale. Debug build, as the other network-fault figures.
#   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/tasks_test scripts/bench-silent.sh
#   (SILENT_BENCH_N=20 by default; through PgBouncer: TEST_DATABASE_URL at its port)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "date: $(date -u +%FT%TZ); commit: $(git rev-parse --short HEAD); nproc: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo test --quiet --test network_faults silent_mid_statement_timings -- --ignored --nocapture 2>&1 \
  | grep -E "^(warm create|create whose)"
