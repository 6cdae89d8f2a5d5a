#!/usr/bin/env bash
# Power tuning after AWS Lambda Power Tuning (BENCHMARKS.md "Power tuning"): for each memory
# size, under Lambda's CPU model (tools/src/lambda_cpu.rs: init unthrottled, then the quota of
# 20 ms × MB / 1769 per 20 ms period), one table of
#   - the cold first response of list-tasks (median, p90) for HS256, JWKS_JSON and a JWKS fetch,
#     over bench-cold.sh's slow network (DB 2 ms RTT with TLS + SCRAM, JWKS 50 ms RTT), every
#     memory size interleaved in one cold-bench run so the machine's noise hits all alike, and a
#     whole core ("none") as the reference;
#   - the warm invocation latency (lambda-bench, list-tasks, median and p99) at the same memory;
#   - the cost per million requests: API Gateway HTTP API + Lambda requests + Lambda arm64
#     GB-seconds, where a warm request bills its warm latency rounded up to 1 ms and a cold one
#     (COLD_RATE of them) bills init + first invocation, i.e. its cold first response of
#     COST_FAMILY, rounded up to 1 ms (on-demand init is billed since August 2025).
#
#   scripts/bench-power.sh
#   SPAWNS=10 WARM=500 MEMORY=none,128,256,512,1024,1769 THROTTLE=init-free COLD_RATE=0.01 \
#   COST_FAMILY=eddsa scripts/bench-power.sh
#
# Prices (USD, /work/shared/TOOLING.md "Prices", from the AWS pricing pages as of 2026-12-02):
# PRICE_APIGW_PER_M=1.00 PRICE_REQUESTS_PER_M=0.20 PRICE_GB_SECOND=0.0000133334 (arm64).
# The raw outputs stay in RAW_DIR (a new temporary directory unless set); with REUSE=1 and
# RAW_DIR holding a previous run's cold.txt and warm-*.txt, only the table is recomputed.
# Needs what bench-cold.sh needs (a writable cgroup cpu controller: root here), and for the
# warm figures the PostgreSQL at BENCH_DATABASE_URL (default 127.0.0.1:5432, tasks_bench).
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
memory=${MEMORY:-none,128,256,512,1024,1769}
throttle=${THROTTLE:-init-free}
raw=${RAW_DIR:-$(mktemp -d /tmp/bench-power.XXXXXX)}
mkdir -p "$raw"

if [ "${REUSE:-0}" != 1 ]; then
    # bench-cold.sh builds list-tasks and cold-bench from the working tree (cargo does nothing
    # when they are fresh) and runs every memory size in the same run.
    MEMORY=$memory THROTTLE=$throttle SPAWNS=${SPAWNS:-10} DB_DELAY_MS=1 JWKS_DELAY_MS=25 \
        FAMILIES=hs256,eddsa,eddsa-json FUNCTION=list-tasks \
        scripts/bench-cold.sh now | tee "$raw/cold.txt"
    CARGO_TARGET_DIR="$target" cargo build --release --quiet -p tasks-tools --bin lambda-bench
    for mb in ${memory//,/ }; do
        "$target/release/lambda-bench" --dir "$target/release" --function list-tasks \
            --spawns 1 --warm "${WARM:-500}" --memory "$mb" --throttle "$throttle" \
            --database-url "${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tasks_bench}" \
            | tee "$raw/warm-$mb.txt"
    done
fi
echo "raw outputs: $raw" >&2

MEMORY=$memory COLD_RATE=${COLD_RATE:-0.01} COST_FAMILY=${COST_FAMILY:-eddsa} \
    PRICE_APIGW_PER_M=${PRICE_APIGW_PER_M:-1.00} PRICE_REQUESTS_PER_M=${PRICE_REQUESTS_PER_M:-0.20} \
    PRICE_GB_SECOND=${PRICE_GB_SECOND:-0.0000133334} THROTTLE=$throttle \
    python3 - "$raw" <<'EOF'
import math, os, re, sys

raw = sys.argv[1]
env = os.environ
cold_rate = float(env["COLD_RATE"])
cost_family = env["COST_FAMILY"]
apigw, requests, gb_second = (float(env[k]) for k in
                              ("PRICE_APIGW_PER_M", "PRICE_REQUESTS_PER_M", "PRICE_GB_SECOND"))

def label(mb):
    return "whole core" if mb == "none" else f"{mb} MB {env['THROTTLE']}"

# cold-bench's table: | now, <cpu label> | <family> | cold median | cold p90 | init median | ...
cold = {}
for line in open(os.path.join(raw, "cold.txt")):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) > 5 and cells[0].startswith("now, "):
        cold[(cells[0][len("now, "):], cells[1])] = (float(cells[2]), float(cells[3]), float(cells[4]))

def warm(mb):
    # lambda-bench's row: | list-tasks | cold median | cold max | status | warm median | warm p99 | ...
    for line in open(os.path.join(raw, f"warm-{mb}.txt")):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "list-tasks":
            return float(cells[4]), float(cells[5])
    sys.exit(f"no list-tasks row in warm-{mb}.txt")

def cost_per_million(mb, warm_ms, cold_ms):
    gb = int(mb) / 1024
    billed_s = (1 - cold_rate) * math.ceil(warm_ms) / 1000 + cold_rate * math.ceil(cold_ms) / 1000
    return apigw + requests + 1e6 * gb * billed_s * gb_second

families = [("hs256", "HS256"), ("eddsa-json", "JWKS_JSON"), ("eddsa", "JWKS fetched")]
print()
print(f"cost: API Gateway HTTP API ${apigw:.2f}/M + Lambda requests ${requests:.2f}/M + arm64 "
      f"${gb_second:.10f}/GB-s; {cold_rate:.1%} of requests cold, billed init + first invocation "
      f"= the {cost_family} cold first response; the rest their warm latency (each rounded up to 1 ms)")
print("| memory | CPU | " + " | ".join(f"{name} cold median / p90 ms" for _, name in families)
      + " | warm median / p99 ms | $ per million requests | of which Lambda GB-s |")
print("|---|---|" + "---|" * len(families) + "---|---|---|")
for mb in env["MEMORY"].split(","):
    key = label(mb)
    cells = []
    for family, _ in families:
        median, p90, _ = cold[(key, family)]
        cells.append(f"{median:.1f} / {p90:.1f}")
    warm_ms, warm_p99 = warm(mb)
    if mb == "none":
        cpu, price, compute = "whole core", "—", "—"
    else:
        cpu = f"{int(mb) / 1769:.1%} of a core"
        total = cost_per_million(mb, warm_ms, cold[(key, cost_family)][0])
        price, compute = f"{total:.4f}", f"{total - apigw - requests:.4f}"
    print(f"| {mb} | {cpu} | " + " | ".join(cells) + f" | {warm_ms:.2f} / {warm_p99:.2f} | {price} | {compute} |")
EOF
