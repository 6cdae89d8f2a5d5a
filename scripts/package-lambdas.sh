#!/usr/bin/env bash
# Builds the nine functions (eight routes and the catch-all) for AWS Lambda arm64 (provided.al2023) in release mode with
# cargo-lambda (zig as the cross linker, glibc of Amazon Linux 2023) and packages each as
# target/lambda/<function>/bootstrap.zip. Prints the sizes; fails if one exceeds the stated
# target, 3 MB = 3,000,000 bytes (not 3 MiB, which would leave 145,728 bytes unchecked).
set -euo pipefail
cd "$(dirname "$0")/.."
limit=3000000
packages=(health list-tasks create-task get-task update-task delete-task toggle-task list-changes not-found)
cargo lambda build --release --arm64 --output-format zip $(printf -- '-p %s ' "${packages[@]}")
status=0
printf '%-12s %10s %10s\n' function zip_bytes bootstrap
for p in "${packages[@]}"; do
  zip="target/lambda/$p/bootstrap.zip"
  size=$(stat -c %s "$zip")
  bin=$(unzip -Z1 "$zip" | head -1)
  printf '%-12s %10d %10s\n' "$p" "$size" "$bin"
  [ "$bin" = bootstrap ] || { echo "$zip: bootstrap is not at the root" >&2; status=1; }
  [ "$size" -le "$limit" ] || { echo "$zip: $size bytes, over 3,000,000" >&2; status=1; }
done
exit $status
