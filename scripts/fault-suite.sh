#!/usr/bin/env bash
# The fault suite (docs/RELIABILITY.md): runs every tests/fault_*.rs against the real services
# and prints `fault suite: N cases, N survived, N lost` from the tests' own FAULT-CASE lines.
# A case that never reported (a binary that failed to build, a crash before its verdict) counts
# as lost, so nothing is silently skipped. Exit status: non-zero unless every case survived.
set -uo pipefail
cd "$(dirname "$0")/.."

args=()
for f in tests/fault_*.rs; do
  args+=(--test "$(basename "$f" .rs)")
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
cargo test --no-fail-fast "${args[@]}" -- --nocapture --test-threads="${FAULT_THREADS:-2}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
secs=$(( $(date +%s) - start ))

# Every case the sources declare, and the verdicts the run printed.
mapfile -t declared < <(grep -ho 'Case::new("[^"]*")' tests/fault_*.rs | sed 's/Case::new("\(.*\)")/\1/' | sort -u)
verdicts=$(grep -o 'FAULT-CASE [^ ]* \(survived\|lost\)' "$log" | sort -u)
survived=0
lost=0
for name in "${declared[@]}"; do
  if grep -qx "FAULT-CASE $name survived" <<<"$verdicts" \
     && ! grep -qx "FAULT-CASE $name lost" <<<"$verdicts"; then
    survived=$((survived + 1))
  else
    lost=$((lost + 1))
    echo "fault suite: LOST $name" >&2
  fi
done
cases=${#declared[@]}
echo "fault suite: $cases cases, $survived survived, $lost lost (${secs}s)"
if [ "$lost" -ne 0 ] || [ "$rc" -ne 0 ]; then
  exit 1
fi
