#!/usr/bin/env bash
# Side by side with etcd: the same workload (value size, key count, concurrency) against a
# 3-member etcd 3.4 on loopback and against a capdial strong keyspace, in one run:
#
#   capdial strong put         vs  etcd put
#   capdial linearizable get   vs  etcd linearizable get
#   capdial lease get          vs  etcd serializable get at the leader
#   capdial stale get          vs  etcd serializable get spread over the members
#
# at each concurrency in $CONCURRENCY. One system is under load at a time (this machine has
# 2 cores): the cases alternate etcd / capdial per concurrency, and no etcd member runs (or,
# with ETCD_FRESH=0, they idle) while capdial does. Prints a Markdown table with the ratios,
# writes it to $OUT and the raw JSON objects (one per case, as the tools printed them) to
# ${OUT%.md}.jsonl.
#
#   bash scripts/compare-etcd.sh
#   DURATION=2s CONCURRENCY=64 bash scripts/compare-etcd.sh
#   SYSTEMS=etcd DURATION=2s bash scripts/compare-etcd.sh     # the etcd half only
#
# Environment (defaults): DURATION (10s), WARMUP (1s), KEYS (10000), VALUE_SIZE (256),
# CONCURRENCY ("1 64"), OUT (bench-results/compare-etcd-<UTC time>.md), SYSTEMS ("etcd
# capdial"), CAPDIAL (target/release/capdial; any program taking the same `bench` flags),
# CASE_TIMEOUT (300 s per case), IDLE_WAIT (30: seconds to wait for an idle machine before
# each case, when ../shared/peers/cpuguard.py is there to check), ETCD_TARGET (unset: per
# case, see below; `all`, `leader` or `split` forces one for every etcd case), ETCD_FRESH (1).
#
# ETCD_FRESH=1 starts a fresh etcd cluster (and preloads it) for every etcd case, as
# `capdial bench --cluster` starts a fresh capdial cluster for every capdial case: otherwise
# the etcd gets at c=64 run on a cluster that has just taken ~100k puts (50 MB of revisions,
# a Raft snapshot), which here cost its serializable gets ~15 % (19.1k -> 16.1k ops/s),
# while capdial's gets always run on a fresh cluster. ETCD_FRESH=0: one etcd cluster for
# the whole run, stopped at the end.
#
# Routing follows what capdial's client does with each request, so both systems pay the same
# hops: capdial writes go to the leader; linearizable and lease reads too (a follower refuses
# them and the client follows the leader hint, src/strong/replica.rs); stale reads go to the
# task's preferred node (task i -> node i mod 3). So etcd puts and linearizable gets go to the
# leader (--target leader), and serializable gets run twice: at the leader (beside lease
# reads) and spread over the members (--target all, beside stale reads).
#
# It installs nothing: it says what to apt-get install if etcd or protoc is missing.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ETCD_CLUSTER="$(dirname "$0")/../../shared/peers/etcd-cluster.sh"
CPUGUARD="$(dirname "$0")/../../shared/peers/cpuguard.py"
ETCD_PIDS=/tmp/etcd-peers/pids # where etcd-cluster.sh records its members
ENDPOINTS=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
KEYS=${KEYS:-10000}
VALUE_SIZE=${VALUE_SIZE:-256}
CONCURRENCY=${CONCURRENCY:-"1 64"}
SYSTEMS=${SYSTEMS:-"etcd capdial"}
CASE_TIMEOUT=${CASE_TIMEOUT:-300}
IDLE_WAIT=${IDLE_WAIT:-30}
ETCD_TARGET=${ETCD_TARGET:-}
ETCD_FRESH=${ETCD_FRESH:-1}
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${OUT:-bench-results/compare-etcd-$STAMP.md}
JSONL=${OUT%.md}.jsonl
CAPDIAL_BUILT=$ROOT/target/release/capdial
CAPDIAL=${CAPDIAL:-$CAPDIAL_BUILT}
ETCD_BENCH=$ROOT/target/release/capdial-etcd-bench
COMMAND="DURATION=$DURATION WARMUP=$WARMUP KEYS=$KEYS VALUE_SIZE=$VALUE_SIZE CONCURRENCY=\"$CONCURRENCY\" SYSTEMS=\"$SYSTEMS\" ETCD_FRESH=$ETCD_FRESH${ETCD_TARGET:+ ETCD_TARGET=$ETCD_TARGET} bash scripts/compare-etcd.sh"

cd "$ROOT"

runs() { [[ " $SYSTEMS " == *" $1 "* ]]; }

# --- prerequisites -------------------------------------------------------------------------
check_tools() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  command -v python3 >/dev/null || missing+=(python3)
  if ((${#missing[@]})); then
    echo "compare-etcd: missing tools. Install them with:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  if [[ ! -f $ETCD_CLUSTER ]]; then
    echo "compare-etcd: $ETCD_CLUSTER not found (it starts the etcd cluster)" >&2
    exit 1
  fi
  if ! etcd --version | grep -q 'Version: 3\.4\.'; then
    echo "compare-etcd: warning: this is not etcd 3.4: $(etcd --version | head -1)" >&2
  fi
}

build() {
  echo "== building (release)" >&2
  if runs capdial && [[ $CAPDIAL == "$CAPDIAL_BUILT" ]]; then cargo build --release; fi
  cargo build --release -p capdial-etcd-bench
  if runs capdial && ! "$CAPDIAL" bench --help 2>/dev/null | grep -q -- '--read-ratio'; then
    echo "compare-etcd: $CAPDIAL bench has no --read-ratio yet; run with SYSTEMS=etcd" >&2
    exit 1
  fi
}

# --- etcd cluster ----------------------------------------------------------------------------
ETCD_STARTED=
stop_etcd() {
  # Only a cluster this script started: never someone else's.
  if [[ -n $ETCD_STARTED ]]; then
    bash "$ETCD_CLUSTER" stop >&2 || true
    ETCD_STARTED=
  fi
}

start_etcd() {
  if [[ -e $ETCD_PIDS ]]; then
    echo "compare-etcd: an etcd cluster is recorded in $ETCD_PIDS; stop it first" \
      "(bash $ETCD_CLUSTER stop)" >&2
    exit 1
  fi
  ETCD_STARTED=1
  bash "$ETCD_CLUSTER" start >&2
  echo "== preloading $KEYS keys into etcd" >&2
  timeout "$CASE_TIMEOUT" "$ETCD_BENCH" --endpoints "$ENDPOINTS" --keys "$KEYS" \
    --value-size "$VALUE_SIZE" --preload --duration 0s
}

# --- one case ----------------------------------------------------------------------------------
# run_case NAME PIDS_FILE CMD...: runs CMD (bounded), keeps its JSON line in $WORK/NAME.json
# and $JSONL, the CPU check in $WORK/NAME.guard, the command in $WORK/NAME.cmd, the exit
# status in $WORK/NAME.rc. A failing case is recorded and the run goes on.
run_case() {
  local name=$1 pids=$2
  shift 2
  echo "== $name: $*" >&2
  printf '%s\n' "$*" > "$WORK/$name.cmd"
  local guard=()
  if [[ -f $CPUGUARD ]]; then
    guard=(python3 "$CPUGUARD" --pids-file "$pids" --wait-idle 85 --max-wait "$IDLE_WAIT" --)
  fi
  local rc=0
  "${guard[@]}" timeout "$CASE_TIMEOUT" "$@" > "$WORK/$name.out" || rc=$?
  echo "$rc" > "$WORK/$name.rc"
  grep '^{' "$WORK/$name.out" | tail -1 > "$WORK/$name.json" || true
  grep -E '^CPUGUARD,' "$WORK/$name.out" > "$WORK/$name.guard" || true
  cat "$WORK/$name.json" >> "$JSONL"
  grep -E "^CPUGUARD" "$WORK/$name.out" >&2 || true
  if [[ $rc != 0 || ! -s $WORK/$name.json ]]; then
    echo "compare-etcd: case $name failed (exit $rc)" >&2
  fi
}

# etcd_case NAME C READ_RATIO READ_LEVEL TARGET (on a fresh cluster with ETCD_FRESH=1)
etcd_case() {
  if [[ $ETCD_FRESH == 1 ]]; then start_etcd; fi
  run_case "etcd-$1-c$2" "$ETCD_PIDS" "$ETCD_BENCH" --endpoints "$ENDPOINTS" \
    --target "${ETCD_TARGET:-$5}" --keys "$KEYS" --value-size "$VALUE_SIZE" \
    --distribution uniform --concurrency "$2" --duration "$DURATION" --warmup "$WARMUP" \
    --read-ratio "$3" --read "$4" --json
  if [[ $ETCD_FRESH == 1 ]]; then stop_etcd; fi
}

# capdial_case NAME C READ_RATIO [--read LEVEL]: its own local 3-node cluster per case
# (`--cluster`), preloaded by `capdial bench` itself.
capdial_case() {
  local name=$1 c=$2 ratio=$3
  shift 3
  run_case "capdial-$name-c$c" /dev/null "$CAPDIAL" bench --cluster --mode strong \
    --keyspace cmp --keys "$KEYS" --value-size "$VALUE_SIZE" --distribution uniform \
    --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP" --json \
    --read-ratio "$ratio" "$@"
}

# --- main ----------------------------------------------------------------------------------
check_tools
build
mkdir -p "$(dirname "$OUT")"
: > "$JSONL"
WORK=$(mktemp -d /tmp/compare-etcd.XXXXXX)
trap 'stop_etcd; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

if runs etcd && [[ $ETCD_FRESH != 1 ]]; then start_etcd; fi
for c in $CONCURRENCY; do
  if runs etcd; then etcd_case put "$c" 0 linearizable leader; fi
  if runs capdial; then capdial_case put "$c" 0; fi
  if runs etcd; then etcd_case get-linearizable "$c" 1 linearizable leader; fi
  if runs capdial; then capdial_case get-linearizable "$c" 1 --read linearizable; fi
  if runs etcd; then etcd_case get-serializable-leader "$c" 1 serializable leader; fi
  if runs capdial; then capdial_case get-lease "$c" 1 --read lease; fi
  if runs etcd; then etcd_case get-serializable-spread "$c" 1 serializable all; fi
  if runs capdial; then capdial_case get-stale "$c" 1 --read stale; fi
done
stop_etcd

python3 "$HERE/compare_table.py" --work "$WORK" --concurrency "$CONCURRENCY" \
  --command "$COMMAND" --jsonl "$JSONL" > "$OUT"
cat "$OUT"
echo >&2
echo "wrote $OUT and $JSONL" >&2
