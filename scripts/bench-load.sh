#!/usr/bin/env bash
# Load benchmark (BENCHMARKS.md): release build, the local server on a fresh database, N users
# (default 100) with one connection and one token each, mixed workload for SECONDS (default 30).
#   scripts/bench-load.sh            # USERS=100 SECONDS_RUN=30 POOL=16 TOKEN_FAMILY=hs256
#   TOKEN_FAMILY=eddsa scripts/bench-load.sh   # or es256, rs256: Better Auth-shaped tokens, JWKS
#                                              # served by loadgen on JWKS_PORT (default 8078)
set -euo pipefail
cd "$(dirname "$0")/.."
users="${USERS:-100}"
seconds="${SECONDS_RUN:-30}"
port="${BENCH_PORT:-8077}"
pool="${POOL:-16}"
family="${TOKEN_FAMILY:-hs256}"
jwks_port="${JWKS_PORT:-8078}"
bin="${CARGO_TARGET_DIR:-target}/release"
db=tasks_bench
issuer=https://app.example.com
cargo build --release --quiet -p tasks-api -p tasks-tools --bin tasks-api --bin loadgen
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
signer=()
case "$family" in
  hs256) auth=(JWT_SECRET="$secret") ;;
  eddsa | es256 | rs256)
    if [ "$family" = rs256 ]; then
      # A throwaway 2048-bit key (ring cannot generate RSA keys); never committed.
      key=$(mktemp)
      openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null |
        openssl pkcs8 -topk8 -nocrypt -outform DER -out "$key"
      signer=(--rsa-key "$key")
    fi
    # The server fetches the key set on first use; loadgen serves it from its start.
    auth=(JWKS_URL="http://127.0.0.1:$jwks_port/api/auth/jwks" JWT_ISSUER="$issuer" JWT_AUDIENCE="$issuer") ;;
  *) echo "TOKEN_FAMILY must be hs256, eddsa, es256 or rs256" >&2; exit 2 ;;
esac
env DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" "${auth[@]}" PORT="$port" \
  DATABASE_POOL_SIZE="$pool" RUST_LOG=error "$bin/tasks-api" serve &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "server pool: $pool connections; load: $users users x 1 connection, ${seconds}s; tokens: $family"
"$bin/loadgen" --url "http://127.0.0.1:$port" --users "$users" --seconds "$seconds" \
  --token-family "$family" --secret "$secret" --jwks-port "$jwks_port" --issuer "$issuer" \
  "${signer[@]}"
