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
SRC=${MEDIACMS_SRC:-../shared/mediacms/app-8.3.2}
case "$SRC" in /*) ;; *) SRC="$REPO/$SRC" ;; esac
RUNS=${MEDIACMS_SUITE_RUNS:-python rust}
WAIT_SECS=${MEDIACMS_SUITE_WAIT_SECS:-900}
T0=$(date +%s)
log() { echo "mediacms-suite [$(($(date +%s) - T0)) s]: $*"; }

if [ ! -f "$SRC/manage.py" ] || [ ! -f "$SRC/requirements.txt" ]; then
  echo "mediacms-suite: no MediaCMS source at $SRC (set MEDIACMS_SRC; README explains)" >&2
  exit 2
fi

# MediaCMS's venv, cached outside the clone and keyed by its requirements, built under a lock so
# two suites starting together do not race.
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/mediacms-worker
REQ_HASH=$(sha256sum "$SRC/requirements.txt" | cut -c1-16)
VENV="$CACHE/venv-$REQ_HASH"
mkdir -p "$CACHE"
(
  flock 9
  # Built in place (a venv's scripts name their own path, so it cannot be moved) and marked
  # complete last: an interrupted build is thrown away and redone.
  if [ ! -f "$VENV/.complete" ]; then
    log "creating MediaCMS venv $VENV (cold cache)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$SRC/requirements.txt"
    touch "$VENV/.complete"
  fi
) 9>"$CACHE/venv.lock"
log "MediaCMS venv ready"

WORK=$(mktemp -d /tmp/mediacms-suite.XXXXXX)
TAG="mcsuite_$$_$(date +%s)"
PIDS=()
REDIS_PORT=""
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  [ -n "$REDIS_PORT" ] && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1
  if [ "${MEDIACMS_SUITE_KEEP:-0}" = 1 ]; then
    echo "mediacms-suite: kept $WORK and databases ${TAG}_*"
  else
    for run in $RUNS; do psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS ${TAG}_$run" >/dev/null 2>&1; done
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# MediaCMS writes logs/ and media_files/ under its tree: a private copy, with our settings.
cp -a "$SRC" "$WORK/app"
cp "$SUITE_DIR/local_settings.py" "$WORK/app/cms/local_settings.py"
echo "mediacms-suite-secret-key-not-for-production" >"$WORK/app/.secret_key"
PY="$VENV/bin/python"
# MediaCMS's sprites run ImageMagick's `convert` from PATH: ImageMagick's own, first on the
# workers' PATH (a machine may have another program of that name earlier on PATH).
mkdir -p "$WORK/bin"
for im in /usr/bin/convert /usr/local/bin/magick; do
  [ -x "$im" ] && "$im" -version 2>/dev/null | grep -q ImageMagick && { ln -s "$im" "$WORK/bin/convert"; break; }
done
WPATH="$WORK/bin:$VENV/bin:$PATH"

# A private Redis on a free port: nobody else's keys, and shut down with the suite.
REDIS_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$WORK" --logfile "$WORK/redis.log" >/dev/null
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

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
  local run=$1 db="${TAG}_$run" redis_db
  case $run in python) redis_db=1 ;; rust) redis_db=2 ;; *) echo "unknown run $run" >&2; return 2 ;; esac
  export SUITE_DB_NAME=$db SUITE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/$redis_db"
  export SUITE_MEDIA_ROOT="$WORK/media-$run/"
  mkdir -p "$SUITE_MEDIA_ROOT"
  cp -a "$WORK/app/media_files/userlogos" "$SUITE_MEDIA_ROOT/" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
  local out="$WORK/$run"
  mkdir -p "$out"
  (
    cd "$WORK/app"
    export PATH="$WPATH"
    "$PY" manage.py migrate -v 0
    "$PY" manage.py loaddata -v 0 fixtures/encoding_profiles.json fixtures/categories.json
    "$PY" "$SUITE_DIR/driver.py" upload "$CLIPS"
  ) >"$out/setup.log" 2>&1 || { tail -30 "$out/setup.log"; return 1; }
  log "$run: migrated and uploaded $(ls "$CLIPS" | wc -l) clips"

  local pids=()
  (cd "$WORK/app" && PATH="$WPATH" exec "$PY" -m celery -A cms worker -Q short_tasks -c 1 -l INFO \
    --without-gossip --without-mingle --without-heartbeat -n "short@$run") >"$out/short.log" 2>&1 &
  pids+=($!)
  if [ "$run" = python ]; then
    (cd "$WORK/app" && PATH="$WPATH" exec "$PY" -m celery -A cms worker -Q long_tasks -c 1 -Ofair \
      --prefetch-multiplier=1 --loglevel=INFO -n "long@$run") >"$out/long.log" 2>&1 &
  else
    local http_port
    http_port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    REDIS_LOCATION=$SUITE_REDIS_URL POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=5432 POSTGRES_NAME=$db \
      POSTGRES_USER=postgres POSTGRES_PASSWORD=postgres MEDIA_ROOT=$SUITE_MEDIA_ROOT \
      WORKER_HTTP_ADDR="127.0.0.1:$http_port" WORKER_ALLOW_ROOT=true WORKER_HWACCEL=software \
      "$WORKER_BIN" run -Q long_tasks -c 1 -n "long@$run" >"$out/long.log" 2>&1 &
  fi
  pids+=($!)
  PIDS+=("${pids[@]}")
  local rc=0
  (cd "$WORK/app" && "$PY" "$SUITE_DIR/driver.py" wait "$WAIT_SECS") >"$out/wait.log" 2>&1 || rc=$?
  log "$run: $(tail -1 "$out/wait.log")"
  # SIGTERM: warm shutdown for both kinds of worker.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  (cd "$WORK/app" && "$PY" "$SUITE_DIR/driver.py" snapshot "$WORK/$run.json") >>"$out/wait.log" 2>&1 \
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
