#!/usr/bin/env bash
# CPU per warm invocation of the function binaries beside the local server's CPU for the same
# request (BENCHMARKS.md "Lambda: warm CPU per invocation", issue 17). Builds the release
# binaries, then runs the driver in tests/warm_cpu.rs against them: N sequential requests per
# function after 50 warm-up ones, CPU from /proc/PID/stat.   N=2000 RUNS=3 by default;
# FUNCTION_DIR=DIR measures the binaries in DIR instead (e.g. an older build, for before/after);
# TEST_DATABASE_URL as for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(get-task list-tasks toggle-task create-task)
targets=(-p tasks-api --bin tasks-api)
for p in "${packages[@]}"; do targets+=(-p "$p" --bin "$p"); done
cargo build --release --quiet "${targets[@]}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
for run in $(seq "${RUNS:-3}"); do
  echo "run $run"
  TASKS_FUNCTION_DIR="${FUNCTION_DIR:-target/release}" WARM_CPU_INVOCATIONS="${N:-2000}" \
    cargo test --quiet --test warm_cpu -- --ignored --nocapture
done
