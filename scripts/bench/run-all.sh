#!/usr/bin/env bash
# Every figure BENCHMARKS.md reports, from one run: the release build, the transcode benchmark
# (variants a, c, b on both clips, RUNS each, interleaved), the dispatch benchmark (RUNS
# each, interleaved) and the backlog benchmark (once: MediaCMS's Python worker, then ours, on
# the same 5 uploads through the real MediaCMS app). Run it on an otherwise idle machine;
# about 55 minutes on 2 cores.
#
#   scripts/bench/run-all.sh            # RUNS=3
#
# Results: target/bench-ladder/summary.md and target/bench-dispatch/summary.md (plus the raw
# results.tsv / results.jsonl beside them).
set -euo pipefail
cd "$(dirname "$0")/../.."
export RUNS=${RUNS:-3}
cargo build --release
scripts/bench/ladder.sh
scripts/bench/dispatch.sh
scripts/bench/backlog.sh
echo "== transcode (target/bench-ladder/summary.md)"
cat target/bench-ladder/summary.md
echo "== dispatch (target/bench-dispatch/summary.md)"
cat target/bench-dispatch/summary.md
echo "== backlog (target/bench-backlog/summary.md)"
cat target/bench-backlog/summary.md
