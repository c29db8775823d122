#!/usr/bin/env bash
# Dispatch benchmark: how fast a worker picks up and finishes cheap MediaCMS tasks, its idle RSS
# and its time from launch to the first finished task. See BENCHMARKS.md.
#
#   scripts/bench/dispatch.sh                 # python (Celery 5.4 stand-in) and, if hooked, ours
#   N=1000 M=50 WORKERS=python scripts/bench/dispatch.sh
#
# Each task is an `encode_media` message for a files_encoding id that does not exist: the
# worker reads files_encoding once and returns False (contract §2.1 step 1), so the numbers are
# broker pickup + one SQL read + the result write. Isolation: Redis DB 13 (FLUSHDB first), a
# unique queue name, a scratch Postgres database loaded from the shared schema.sql.
#
# Environment: RUNS (3, interleaved per worker; medians in summary.md), N (burst size, 500), M (latency samples, 30), GAP_MS (pause between latency
# samples, 20), WORKERS ("python ours"), REDIS_HOST/PORT (127.0.0.1:6379), PGHOST/PGPORT/PGUSER
# (127.0.0.1/5432/postgres), BENCH_DB (mediacms_bench_dispatch).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-3}
N=${N:-500}
M=${M:-30}
GAP_MS=${GAP_MS:-20}
WORKERS=${WORKERS:-"python ours"}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
BENCH_DB=${BENCH_DB:-mediacms_bench_dispatch}
SHARED=${MEDIACMS_SHARED:-$ROOT/tests/fixtures}
VENV=$ROOT/target/bench-venv
WORK=$ROOT/target/bench-dispatch
mkdir -p "$WORK"

export BENCH_REDIS_URL="redis://$REDIS_HOST:$REDIS_PORT/13"
export BENCH_PG_DSN="host=$PGHOST port=$PGPORT user=$PGUSER dbname=$BENCH_DB"

log() { echo "dispatch: $*" >&2; }

# Tools: redis-cli, psql/createdb, a venv with the exact Celery MediaCMS pins (idempotent).
ensure_tools() {
  local need=()
  command -v redis-cli >/dev/null || need+=(redis-tools)
  command -v psql >/dev/null || need+=(postgresql-client)
  python3 -c 'import venv' 2>/dev/null || need+=(python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if ! "$VENV/bin/python" -c 'import celery, psycopg, redis, kombu.transport.redis; assert celery.__version__ == "5.4.0"' 2>/dev/null; then
    log "creating $VENV (celery 5.4.0, psycopg[binary], redis, packaging for kombu's redis transport)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'celery==5.4.0' 'redis>=5' 'psycopg[binary]' packaging
  fi
}

# Scratch DB from MediaCMS's schema (dropped and recreated each invocation).
prepare_db() {
  dropdb --if-exists "$BENCH_DB"
  createdb "$BENCH_DB"
  psql -q -v ON_ERROR_STOP=1 -d "$BENCH_DB" -f "$SHARED/mediacms/schema.sql" >/dev/null
}

# Sum of VmRSS (kB) over a process and its direct children (prefork pool).
tree_rss_kb() {
  local pid=$1
  ps -o rss= --pid "$pid" --ppid "$pid" | awk '{ s += $1 } END { print s + 0 }'
}

# ---- the Python stand-in (Celery 5.4, MediaCMS's celery_long flags) -------------------------
python_start() {
  local queue=$1
  cd "$ROOT/scripts/bench"
  # celery_long: -c 1 -Ofair --prefetch-multiplier=1 (contract §7.4); mingle/gossip left on.
  "$VENV/bin/celery" -A dispatch_app worker -Q "$queue" -c 1 -Ofair --prefetch-multiplier=1 \
    --loglevel=WARNING -n "bench$$@%h" >"$WORK/python-worker.log" 2>&1 &
  echo $!
  cd "$ROOT"
}

# ---- HOOK for the lead: our worker ---------------------------------------------------------
#   ours_start QUEUE  -> start target/release/mediacms-worker in the background consuming QUEUE
#   from $BENCH_REDIS_URL (broker and results), Postgres database $BENCH_DB on $PGHOST:$PGPORT
#   as $PGUSER, concurrency 1 like celery_long; echo its pid on stdout. Return 3 to skip.
# The measurement (seed / ready / latency / burst / idle RSS) is shared with the Python run.
# Needs `cargo build --release` first (skipped, return 3, when the binary is missing).
ours_start() {
  local queue=$1 bin=$ROOT/target/release/mediacms-worker
  [ -x "$bin" ] || return 3
  BROKER_URL=$BENCH_REDIS_URL REDIS_LOCATION=$BENCH_REDIS_URL CELERY_RESULT_BACKEND=$BENCH_REDIS_URL \
    POSTGRES_HOST=$PGHOST POSTGRES_PORT=$PGPORT POSTGRES_NAME=$BENCH_DB POSTGRES_USER=$PGUSER \
    POSTGRES_PASSWORD=${PGPASSWORD:-} WORKER_QUEUES=$queue WORKER_CONCURRENCY=1 \
    MEDIA_ROOT=$WORK/media TEMP_DIRECTORY=$WORK/tmp WORKER_ALLOW_ROOT=true WORKER_HTTP_ADDR=127.0.0.1:0 WORKER_HWACCEL=software \
    "$bin" run >"$WORK/ours-worker.log" 2>&1 &
  echo $!
}

# One worker kind: time to first result, idle RSS, latency, burst. Prints one JSON line.
measure() {
  local kind=$1 queue="bench_dispatch_$$_$1" pid seed prefill t0 ready rss lat burst
  redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n 13 FLUSHDB >/dev/null
  seed=$("$VENV/bin/python" scripts/bench/dispatch_bench.py seed "$queue" | sed 's/.*"id": "\([^"]*\)".*/\1/')
  # The burst is queued behind the seed before the worker starts, so the producer's speed
  # (about 1 200 publishes/s from one Python process) cannot cap the measured rate.
  prefill=$("$VENV/bin/python" scripts/bench/dispatch_bench.py prefill "$queue" "$N" "$WORK/burst-ids.json")
  t0=$(date +%s.%N)
  local rc=0
  pid=$("${kind}_start" "$queue") || rc=$?
  if [ "$rc" = 3 ]; then
    log "$kind: hook not filled (ours_start); skipped"
    return 0
  fi
  [ "$rc" = 0 ] || { log "$kind: start failed ($rc)"; return 1; }
  # shellcheck disable=SC2064  # the pid is known now
  trap "kill $pid 2>/dev/null || true" EXIT
  ready=$("$VENV/bin/python" scripts/bench/dispatch_bench.py ready "$seed" "$t0" "$pid") ||
    { log "$kind: no first result; worker log:"; tail -n 20 "$WORK/$kind-worker.log" >&2; return 1; }
  burst=$("$VENV/bin/python" scripts/bench/dispatch_bench.py drain "$WORK/burst-ids.json" "$seed")
  sleep 3  # settle into idle (BRPOP loop) before reading RSS
  rss=$(tree_rss_kb "$pid")
  lat=$("$VENV/bin/python" scripts/bench/dispatch_bench.py latency "$queue" "$M" "$GAP_MS")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  trap - EXIT
  jq -cn --arg kind "$kind" --argjson rss "$rss" --argjson a "$ready" --argjson b "$lat" --argjson c "$burst" --argjson d "$prefill" \
    '{worker: $kind, idle_rss_kb: $rss} + $a + $b + $d + $c'
}

main() {
  ensure_tools
  prepare_db
  local out=$WORK/results.jsonl kind rep
  printf '{"started": "%s", "nproc": %s, "load": "%s", "N": %s, "M": %s, "RUNS": %s}\n' "$(date -u +%FT%TZ)" \
    "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$N" "$M" "$RUNS" >"$out"
  # Interleaved (python, ours, python, ours, ...) so load drift hits both.
  for rep in $(seq 1 "$RUNS"); do
    for kind in $WORKERS; do
      log "measuring $kind (run $rep)"
      measure "$kind" | tee -a "$out"
    done
  done
  redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n 13 FLUSHDB >/dev/null
  "$VENV/bin/python" - "$out" <<'PY' | tee "$WORK/summary.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"worker"' in l]
keys = ["time_to_first_result_s", "idle_rss_kb", "latency_median_ms", "latency_p95_ms",
        "tasks_per_s"]
med = {}
print("| worker | runs | " + " | ".join(keys) + " |")
print("|---" * (len(keys) + 2) + "|")
for w in dict.fromkeys(r["worker"] for r in rows):
    rs = [r for r in rows if r["worker"] == w]
    med[w] = {k: statistics.median(r[k] for r in rs) for k in keys}
    print(f"| {w} | {len(rs)} | " + " | ".join(f"{med[w][k]:g}" for k in keys) + " |")
if "python" in med and "ours" in med:
    print("| ours / python | | " + " | ".join(
        f"{med['ours'][k] / med['python'][k]:.3g}" for k in keys) + " |")
PY
}

main "$@"
