#!/usr/bin/env bash
# End-to-end latency of a real capdial cluster at ONE client, sequential requests:
# builds the release binary, runs `capdial bench --cluster --ops $OPS` (a local 3-node
# cluster of child processes on 127.0.0.1), and writes bench-results/node-<UTC stamp>.txt
# with the machine and the commit.
#
# If etcd is installed (`etcd` on PATH) and the peer load generator is built
# ($PEERS/etcd-bench/target/release/etcd-bench, see $PEERS/README.md), the same run also
# measures a 3-member etcd on loopback with the same shape (one client, one connection,
# 256-byte values, 10,000 keys) and appends a side-by-side table. etcd is not part of
# this repository.
#
#   OPS=2000 scripts/bench-node.sh        # defaults: OPS=2000, CASE_SECONDS=60, ETCD_SECONDS=10
#   PEERS=/path/to/shared/peers ETCD_BENCH=/path/to/etcd-bench scripts/bench-node.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OPS=${OPS:-2000}
CASE_SECONDS=${CASE_SECONDS:-60}
ETCD_SECONDS=${ETCD_SECONDS:-10}
PEERS=${PEERS:-/work/shared/peers}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release --bin capdial
mkdir -p bench-results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench-results/node-$stamp.txt

{
  echo "# capdial bench --cluster --ops $OPS (scripts/bench-node.sh)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml || echo ' (with local changes)')"
  echo "uname: $(uname -a)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memory: $(grep MemTotal /proc/meminfo | awk '{printf "%.1f GiB", $2 / 1048576}')"
  echo
} > "$out"

# The whole benchmark is bounded: 7 cases of at most CASE_SECONDS each, plus start-up.
timeout $((7 * CASE_SECONDS + 120)) "$TARGET/release/capdial" bench --cluster \
  --ops "$OPS" --case-seconds "$CASE_SECONDS" | tee -a "$out"

ETCD_BENCH=${ETCD_BENCH:-$PEERS/etcd-bench/target/release/etcd-bench}
if ! command -v etcd >/dev/null 2>&1 || [[ ! -x $ETCD_BENCH ]]; then
  echo | tee -a "$out"
  echo "# etcd: not measured (needs etcd on PATH and $ETCD_BENCH; see $PEERS/README.md)" | tee -a "$out"
  echo "wrote $out"
  exit 0
fi

# A private data directory for the etcd cluster; the cluster script kills only the PIDs
# it recorded there.
export ETCD_PEERS_DIR
ETCD_PEERS_DIR=$(mktemp -d /tmp/capdial-bench-etcd.XXXXXX)
stop_etcd() {
  "$PEERS/etcd-cluster.sh" stop >/dev/null 2>&1 || true
  rm -rf "$ETCD_PEERS_DIR"
}
trap stop_etcd EXIT

echo | tee -a "$out"
echo "# etcd $(etcd --version 2>/dev/null | head -1 | awk '{print $3}'), 3 members on loopback, same run" | tee -a "$out"
"$PEERS/etcd-cluster.sh" start | tee -a "$out"
timeout 120 "$ETCD_BENCH" --mode fill --concurrency 64 --conns 4 --label fill | tee -a "$out"
for mode in put get-lin get-ser; do
  timeout $((ETCD_SECONDS + 60)) "$ETCD_BENCH" --mode "$mode" --concurrency 1 --conns 1 \
    --target leader --duration "$ETCD_SECONDS" --warmup 1 --label same-run | tee -a "$out"
done
stop_etcd
trap - EXIT

# Side by side: p50 and p99 in ms of the comparable cases (one client, sequential).
p() { awk -F, -v c="$1" -v f="$2" '$1 == "RESULT" && $2 == "capdial" && $3 == c { printf "%.2f", $f / 1000 }' "$out"; }
e() { awk -F, -v m="$1" -v f="$2" '$1 == "RESULT" && $3 == m && $4 == "leader" && $5 == 1 { printf "%.2f", $f / 1000 }' "$out"; }
{
  echo
  echo "# side by side, one client, p50 / p99 ms (capdial: RESULT,capdial lines; etcd: RESULT lines above)"
  printf '%-34s %-16s %-34s %-16s\n' "capdial" "p50 / p99" "etcd" "p50 / p99"
  printf '%-34s %-16s %-34s %-16s\n' "strong put" "$(p strong-put 8) / $(p strong-put 10)" \
    "put" "$(e put 11) / $(e put 12)"
  printf '%-34s %-16s %-34s %-16s\n' "strong get linearizable" \
    "$(p strong-get-linearizable 8) / $(p strong-get-linearizable 10)" \
    "get linearizable" "$(e get-lin 11) / $(e get-lin 12)"
  printf '%-34s %-16s %-34s %-16s\n' "strong get lease" \
    "$(p strong-get-lease 8) / $(p strong-get-lease 10)" \
    "get serializable" "$(e get-ser 11) / $(e get-ser 12)"
  printf '%-34s %-16s\n' "eventual put local" "$(p eventual-put-local 8) / $(p eventual-put-local 10)"
  printf '%-34s %-16s\n' "eventual put quorum" "$(p eventual-put-quorum 8) / $(p eventual-put-quorum 10)"
  printf '%-34s %-16s\n' "eventual put all" "$(p eventual-put-all 8) / $(p eventual-put-all 10)"
  printf '%-34s %-16s\n' "eventual get local" "$(p eventual-get-local 8) / $(p eventual-get-local 10)"
} | sed 's/ *$//' | tee -a "$out"
echo "wrote $out"
