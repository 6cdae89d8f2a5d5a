#!/usr/bin/env bash
# Token families under load (BENCHMARKS.md "Token families under load"): the load benchmark with
# HS256 and with Better Auth-shaped EdDSA, ES256 and RS256 tokens, families alternated round by
# round so machine noise hits them alike; prints each run and the median per family.
#   scripts/bench-tokens.sh          # ROUNDS=3 SECONDS_RUN=20 USERS=100 FAMILIES="hs256 eddsa es256 rs256"
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
families=${FAMILIES:-hs256 eddsa es256 rs256}
export SECONDS_RUN=${SECONDS_RUN:-20}
out=$(mktemp -d)
for round in $(seq 1 "$rounds"); do
  for family in $families; do
    TOKEN_FAMILY=$family scripts/bench-load.sh > "$out/$family.$round"
    echo "round $round $family: $(grep -E 'requests/s' "$out/$family.$round") | $(grep -E 'latency ms' "$out/$family.$round")"
  done
done
echo "median requests/s (ratio to hs256):"
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
base=$(cat "$out"/hs256.* | grep -oE 'requests/s: [0-9]+' | grep -oE '[0-9]+' | median)
for family in $families; do
  m=$(cat "$out/$family".* | grep -oE 'requests/s: [0-9]+' | grep -oE '[0-9]+' | median)
  awk -v f="$family" -v m="$m" -v b="$base" 'BEGIN { printf "  %-6s %6d  %.3f\n", f, m, m / b }'
done
