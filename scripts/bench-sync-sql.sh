#!/usr/bin/env bash
# PostgreSQL CPU per call (BENCHMARKS.md "Incremental sync"): the four writes at each schema
# version of VERSIONS (migrations up to that one) — by default V6 (before issue 18: the V5
# functions) and V7 (one write core that also moves the user's change position) — and, at the
# last version, a changes page against a list page of the same size.
#
#   scripts/bench-sync-sql.sh        # CALLS=2000 ROUNDS=5 PAGE=100 VERSIONS="6 7"
#                                    # PostgreSQL on 127.0.0.1:5432
#
# Each round runs CALLS creates, then a toggle, an update and a delete of each created task, as
# separate autocommitted statements on one connection (the simple protocol parses and plans
# each call, as the API's unnamed statements do), and reads that backend's user + system CPU
# from /proc between phases; then a user with PAGE tasks reads its first list page and its first
# changes page CALLS times each. Prints each round and the median, in microseconds per call.
# CPU time, not wall time, so other load on the machine matters little; /proc counts in clock
# ticks (10 ms), so a phase of 2,000 calls resolves about 2%.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${CALLS:-2000} rounds=${ROUNDS:-5} page=${PAGE:-100}
read -r -a versions <<<"${VERSIONS:-6 7}"
last=${versions[-1]}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pg() { psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

# A database with the migrations up to $2 (refinery's file order), applied with psql.
prepare() {
  local db=$1 last=$2
  pg -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  for file in $(ls migrations/V*__*.sql | sort -V); do
    local version
    version=$(basename "$file" | sed -E 's/^V([0-9]+)__.*/\1/')
    if [ "$version" -le "$last" ]; then pg -d "$db" -f "$file" >/dev/null; fi
  done
}

# The SQL of one round: `mark <phase>` lines print the backend's CPU ticks so far.
generate() {
  python3 - "$1" "$2" "$calls" "$page" "$last" <<'PY'
import sys, uuid
version, round_no, calls, page, last = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
user = f"bench-{round_no}-{uuid.uuid4().hex}"
out = ["SELECT pg_backend_pid() AS pid \\gset", "\\setenv BACKEND :pid"]
mark = lambda phase: out.append(f"\\! printf '{phase} '; awk '{{print $14 + $15}}' /proc/$BACKEND/stat")
def write(op, task):
    key = uuid.uuid4()
    shared = f"'{task}', '{user}', NULL, 'req {key}', '\\x00', '{key}', 300"
    if version <= 6:
        args = {"create": f"{shared}, 'title', NULL", "update": f"{shared}, NULL, 'renamed', 'd', NULL",
                "toggle": f"{shared}, NULL", "delete": f"{shared}, NULL"}[op]
        return f"SELECT outcome FROM tasks_{op}_v1({args});"
    body = {"create": "'title', NULL, NULL", "update": "'renamed', 'd', NULL"}.get(op, "NULL, NULL, NULL")
    return f"SELECT outcome FROM tasks_write_v2('{op}', {shared}, NULL, {body}, 2592000);"
tasks = [uuid.uuid7() if hasattr(uuid, "uuid7") else uuid.uuid4() for _ in range(calls)]
mark("start")
for op in ["create", "toggle", "update", "delete"]:
    out.extend(write(op, t) for t in tasks)
    mark(op)
if version == last:
    reader = f"reader-{round_no}-{uuid.uuid4().hex}"
    user = reader
    out.extend(write("create", uuid.uuid4()) for _ in range(page))
    mark("seed")
    out.extend(f"SELECT count(*) FROM tasks_list_v1('{reader}', NULL, NULL, NULL, {page + 1});" for _ in range(calls))
    mark("list-page")
    out.extend(f"SELECT count(*) FROM tasks_changes_v1('{reader}', 0, NULL, {page + 1});" for _ in range(calls))
    mark("changes-page")
print("\n".join(out))
PY
}

# Microseconds per call of each phase, from the tick marks.
per_call() {
  awk -v calls="$calls" -v hz="$(getconf CLK_TCK)" '
    $1 == "start" || $1 == "seed" { last = $2; next }
    /^[a-z-]+ [0-9]+$/ { printf "%s %.1f\n", $1, ($2 - last) * 1e6 / hz / calls; last = $2 }'
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $calls calls per phase, $rounds rounds, page $page"
for version in "${versions[@]}"; do prepare "tasks_bench_sync_v$version" "$version"; done
for round in $(seq 1 "$rounds"); do
  for version in "${versions[@]}"; do
    generate "$version" "$round" >"$work/round.sql"
    pg -d "tasks_bench_sync_v$version" -f "$work/round.sql" | grep -E '^[a-z-]+ [0-9]+$' \
      | per_call | sed "s/^/V$version /" | tee -a "$work/results"
  done
done
echo "median µs of PostgreSQL CPU per call:"
sort -k1,2 "$work/results" | awk '
  { key = $1 " " $2; values[key] = values[key] " " $3 }
  END { for (key in values) { n = split(values[key], v, " "); asort(v); print key, v[int((n + 1) / 2)] } }' | sort
for version in "${versions[@]}"; do pg -d postgres -c "DROP DATABASE tasks_bench_sync_v$version" >/dev/null; done
