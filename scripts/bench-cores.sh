#!/usr/bin/env bash
# Runs the criterion benchmarks of the two sans-IO cores and records the results, with the
# machine and commit they came from, under bench-results/. One command, anyone can run it:
#
#   bash scripts/bench-cores.sh            # full criterion runs
#   QUICK=1 bash scripts/bench-cores.sh    # criterion --quick (a minute or two)
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
out="bench-results/cores-${stamp}.txt"
quick=()
[ "${QUICK:-0}" = 1 ] && quick=(--quick)

{
  echo "# capdial core benchmarks"
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
  echo "rustc:   $(rustc --version)"
  echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') x $(nproc)"
  echo "memory:  $(free -h | awk '/^Mem:/ {print $2}')"
  echo "kernel:  $(uname -sr)"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"
  echo
  for bench in raft_core eventual; do
    echo "## cargo bench --bench ${bench} -- ${quick[*]:-}"
    cargo bench --quiet --bench "${bench}" -- "${quick[@]}" 2>&1 | grep -v '^$'
    echo
  done
} | tee "${out}"
echo "wrote ${out}"
