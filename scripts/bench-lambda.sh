#!/usr/bin/env bash
# Lambda figures (BENCHMARKS.md): the eight route functions' release binaries (x86_64, this machine) under the
# in-process Runtime API: cold start (spawn → first response, incl. the first database
# connection), warm latency, peak RSS.   SPAWNS=20 WARM=1000 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(health list-tasks create-task get-task update-task delete-task toggle-task list-changes)
cargo build --release --quiet $(printf -- "-p %s " "${packages[@]}")
cargo build --release --quiet -p tasks-tools --bin lambda-bench
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
target/release/lambda-bench --dir target/release --spawns "${SPAWNS:-20}" --warm "${WARM:-1000}"
