#!/usr/bin/env bash
# Cold start with injected latency (BENCHMARKS.md "Lambda: cold start over a slow network"):
# spawn → first response of a real function binary (list-tasks) with a delaying TCP proxy in
# front of a TLS + SCRAM PostgreSQL (1 ms each way) and one in front of the JWKS endpoint
# (25 ms each way), for HS256, Better Auth EdDSA tokens (JWKS fetched) and the same with
# JWKS_JSON (nothing fetched), built from each REV and from the working tree.
#
#   scripts/bench-cold.sh [REV ...]      # default REV: ff5ad38~1, the commit before the overlap
#   scripts/bench-cold.sh now            # the working tree only
#   MEMORY=none,128 scripts/bench-cold.sh now   # whole core and Lambda's 128 MB CPU quota
#
# Each REV is checked out (git worktree, detached) in $COLD_BEFORE_SRC/<sha> and built there
# with CARGO_TARGET_DIR=$COLD_BEFORE_TARGET/<sha>; the working tree builds into
# ${CARGO_TARGET_DIR:-target}. The database is a throwaway cluster (ssl=on, SCRAM only, a
# certificate for localhost from a CA made here with openssl), deleted on exit; set
# COLD_DATABASE_URL to use another (its host name must resolve to 127.0.0.1 first).
# SPAWNS=20 DB_DELAY_MS=1 JWKS_DELAY_MS=25 FAMILIES=hs256,eddsa,eddsa-json FUNCTION=list-tasks
# MEMORY=none (a whole core; or MB, comma-separated: each is a CPU model of the same run)
# THROTTLE=init-free (Lambda's: quota from the first invocation/next; or always) by default.
# A CPU model needs a writable cgroup cpu controller (root here); without one cold-bench says
# so and prints no figures.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
src_root=$(realpath -m "${COLD_BEFORE_SRC:-$target/cold-before/src}")
target_root=$(realpath -m "${COLD_BEFORE_TARGET:-$target/cold-before/target}")
function=${FUNCTION:-list-tasks}
revs=("$@")
[ ${#revs[@]} -gt 0 ] || revs=(ff5ad38~1)
[ "${revs[*]}" = now ] && revs=()

builds=()
for rev in ${revs[@]+"${revs[@]}"}; do
    sha=$(git rev-parse --short "$rev^{commit}")
    src="$src_root/$sha"
    if [ ! -d "$src" ]; then
        mkdir -p "$src_root"
        git worktree add --detach "$src" "$sha" >/dev/null
    fi
    echo "building $function at $sha ($rev) into $target_root/$sha" >&2
    (cd "$src" && CARGO_TARGET_DIR="$target_root/$sha" cargo build --release --quiet -p "$function")
    builds+=(--build "$sha=$target_root/$sha/release")
done
echo "building $function and cold-bench from the working tree into $target" >&2
CARGO_TARGET_DIR="$target" cargo build --release --quiet -p "$function"
CARGO_TARGET_DIR="$target" cargo build --release --quiet -p tasks-tools --bin cold-bench
builds+=(--build "now=$target/release")

database_url=${COLD_DATABASE_URL:-}
if [ -z "$database_url" ]; then
    # PostgreSQL's server tools: the newest /usr/lib/postgresql/*/bin (Debian), else PATH.
    pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    [ -n "$pgbin" ] || pgbin=$(dirname "$(command -v initdb)")
    as_postgres=()
    [ "$(id -u)" = 0 ] && as_postgres=(runuser -u postgres --)
    dir=$(mktemp -d /tmp/cold-bench-pg.XXXXXX)
    cleanup() {
        "${as_postgres[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$dir"
    }
    trap cleanup EXIT
    password=cold-bench-$RANDOM$RANDOM
    # A P-256 CA and a certificate for localhost (what the functions verify, with SNI).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=cold-bench CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$dir/ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/ext" -out "$dir/server.crt" 2>/dev/null
    printf '%s' "$password" >"$dir/pwfile"
    chmod 600 "$dir/server.key"
    [ "$(id -u)" = 0 ] && chown -R postgres "$dir" && chmod 755 "$dir"
    "${as_postgres[@]}" "$pgbin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" \
        -A scram-sha-256 >/dev/null
    port=${COLD_PG_PORT:-55433}
    cat >>"$dir/data/postgresql.auto.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
EOF
    echo 'host all all 127.0.0.1/32 scram-sha-256' >"$dir/data/pg_hba.conf"
    "${as_postgres[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 start >/dev/null
    database_url="postgres://postgres:$password@localhost:$port/tasks_bench?sslmode=require&sslrootcert=$dir/ca.pem"
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$target/release/cold-bench" "${builds[@]}" --function "$function" \
    --database-url "$database_url" --spawns "${SPAWNS:-20}" \
    --db-delay-ms "${DB_DELAY_MS:-1}" --jwks-delay-ms "${JWKS_DELAY_MS:-25}" \
    --families "${FAMILIES:-hs256,eddsa,eddsa-json}" --fixtures "$repo/tests/fixtures/better-auth" \
    --memory "${MEMORY:-none}" --throttle "${THROTTLE:-init-free}"
