#!/usr/bin/env bash
# Differential suite against the real MediaCMS: upload the same clips twice through MediaCMS's own
# code, once served by MediaCMS's Python `celery_long`, once by mediacms-worker (MediaCMS's Python
# `celery_short` serves short_tasks both times), then compare what MediaCMS's API/ORM show.
# Prints last: `mediacms suite: N media, N identical, N allowed differences, N unexplained`.
#
# MEDIACMS_SRC   MediaCMS v8.3.2's source tree (default ../shared/mediacms/app-8.3.2, relative to
#                the repo root; see README "The MediaCMS differential suite").
# MEDIACMS_SUITE_RUNS   "python rust" (default); one of them alone re-runs half the flow.
# MEDIACMS_SUITE_KEEP=1 keeps the temp dir and databases for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
SUITE_DIR="$REPO/scripts/mediacms_suite"
RUNS=${MEDIACMS_SUITE_RUNS:-python rust}
WAIT_SECS=${MEDIACMS_SUITE_WAIT_SECS:-900}
T0=$(date +%s)
log() { echo "mediacms-suite [$(($(date +%s) - T0)) s]: $*"; }

# shellcheck source=scripts/lib/mediacms-app.sh
. "$REPO/scripts/lib/mediacms-app.sh"
WORK=$(mktemp -d /tmp/mediacms-suite.XXXXXX)
TAG="mcsuite_$$_$(date +%s)"
PIDS=()
REDIS_PORT=""
cleanup() {
  set +e
  mediacms_app_stop
  if [ "${MEDIACMS_SUITE_KEEP:-0}" = 1 ]; then
    echo "mediacms-suite: kept $WORK and databases ${TAG}_*"
  else
    # shellcheck disable=SC2046 # one database per run
    mediacms_app_drop_sites $(printf "${TAG}_%s " $RUNS)
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

mediacms_app_prepare
log "MediaCMS venv ready"

# Our worker, built from this checkout (debug unless MEDIACMS_WORKER_BIN names another build).
WORKER_BIN=${MEDIACMS_WORKER_BIN:-}
if [[ " $RUNS " == *" rust "* ]] && [ -z "$WORKER_BIN" ]; then
  log "building mediacms-worker (debug)"
  cargo build -q --bin mediacms-worker
  WORKER_BIN="$REPO/target/debug/mediacms-worker"
fi

# The clips, made at test time (small; the long one is tiny so the chunk path stays quick).
CLIPS="$WORK/clips"
mkdir -p "$CLIPS"
"$SUITE_DIR/make-clips.sh" "$CLIPS"
log "clips: $(ls "$CLIPS" | tr '\n' ' ')"

run_flow() {
  local run=$1 redis_db
  case $run in python) redis_db=1 ;; rust) redis_db=2 ;; *) echo "unknown run $run" >&2; return 2 ;; esac
  local out="$WORK/$run"
  mkdir -p "$out"
  { mediacms_app_site "${TAG}_$run" "$redis_db" "$WORK/media-$run/" &&
    mediacms_app_driver upload "$CLIPS"; } >"$out/setup.log" 2>&1 || { tail -30 "$out/setup.log"; return 1; }
  log "$run: migrated and uploaded $(ls "$CLIPS" | wc -l) clips"

  local pids=()
  start_short_worker "$run" "$out/short.log"
  pids+=("$LAST_PID")
  start_long_worker "$run" "$run" "$out/long.log" "$WORKER_BIN"
  pids+=("$LAST_PID")
  PIDS+=("${pids[@]}")
  local rc=0
  mediacms_app_driver wait "$WAIT_SECS" >"$out/wait.log" 2>&1 || rc=$?
  log "$run: $(tail -1 "$out/wait.log")"
  # SIGTERM: warm shutdown for both kinds of worker.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  mediacms_app_driver snapshot "$WORK/$run.json" >>"$out/wait.log" 2>&1 \
    || { tail -30 "$out/wait.log"; return 1; }
  log "$run: done (wait rc $rc)"
  return $rc
}

for run in $RUNS; do
  run_flow "$run" || { echo "mediacms-suite: the $run run failed; logs in $WORK/$run (kept)"; MEDIACMS_SUITE_KEEP=1; exit 1; }
done

set -- $RUNS
if [ $# -lt 2 ]; then
  log "one run only ($RUNS): nothing to compare; snapshot in $WORK/$1.json"
  MEDIACMS_SUITE_KEEP=1
  exit 0
fi
log "comparing"
rc=0
"$PY" "$SUITE_DIR/compare.py" "$WORK/python.json" "$WORK/rust.json" "$SUITE_DIR/allow-list.txt" || rc=$?
[ $rc -ne 0 ] && MEDIACMS_SUITE_KEEP=1
exit $rc
