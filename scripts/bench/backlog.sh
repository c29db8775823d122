#!/usr/bin/env bash
# Backlog benchmark: N uploads (default 5 × 20 s 720p30) queued at once through MediaCMS's own
# upload code, BEFORE the long worker starts; then one long worker (`-c 1`) works through them.
# Once MediaCMS's Python `celery_long` (`-c 1 -Ofair --prefetch-multiplier=1`), once
# mediacms-worker (release build, `-c 1`, its defaults: decode-once and playable-first on).
# Per worker: seconds from the worker's start to each media's first playable rendition (first
# h264 Encoding `success`), their mean, and to the last Encoding's end (MediaCMS's rows,
# `update_date`). Same setup as scripts/mediacms-suite.sh (its venv cache, settings, a private
# Redis, a scratch database per worker), MediaCMS's short worker beside both.
#
# WORKERS ("python rust"), N (5), SECS (20), OUT (target/bench-backlog). Takes ~5 min on 2 cores.
# Output: $OUT/<run>.json per worker and $OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
SUITE_DIR="$REPO/scripts/mediacms_suite"
SRC=${MEDIACMS_SRC:-../shared/mediacms/app-8.3.2}
case "$SRC" in /*) ;; *) SRC="$REPO/$SRC" ;; esac
WORKERS=${WORKERS:-python rust}
N=${N:-5}
SECS=${SECS:-20}
OUT=${OUT:-$REPO/target/bench-backlog}
BIN=${WORKER_BIN:-$REPO/target/release/mediacms-worker}
T0=$(date +%s)
log() { echo "backlog [$(($(date +%s) - T0)) s]: $*"; }
[ -x "$BIN" ] || { echo "backlog: no $BIN (cargo build --release)" >&2; exit 2; }

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/mediacms-worker
VENV="$CACHE/venv-$(sha256sum "$SRC/requirements.txt" | cut -c1-16)"
[ -f "$VENV/.complete" ] || { echo "backlog: no MediaCMS venv; run scripts/mediacms-suite.sh once" >&2; exit 2; }
PY="$VENV/bin/python"

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/bench-backlog.XXXXXX)
TAG="bench_backlog_$$"
PIDS=()
REDIS_PORT=""
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  [ -n "$REDIS_PORT" ] && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1
  for run in $WORKERS; do psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS ${TAG}_$run" >/dev/null 2>&1; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cp -a "$SRC" "$WORK/app"
cp "$SUITE_DIR/local_settings.py" "$WORK/app/cms/local_settings.py"
echo "bench-backlog-secret-key-not-for-production" >"$WORK/app/.secret_key"
mkdir -p "$WORK/bin"
for im in /usr/bin/convert /usr/local/bin/magick; do
  [ -x "$im" ] && "$im" -version 2>/dev/null | grep -q ImageMagick && { ln -s "$im" "$WORK/bin/convert"; break; }
done
WPATH="$WORK/bin:$VENV/bin:$PATH"
REDIS_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$WORK" --logfile "$WORK/redis.log" >/dev/null
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# The uploads: one 720p30 clip (testsrc2 + a tone, x264 fast CRF 18, AAC), N copies by name.
CLIPS="$WORK/clips"
mkdir -p "$CLIPS"
ffmpeg -hide_banner -nostdin -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30:duration=$SECS" \
  -f lavfi -i "sine=frequency=440:duration=$SECS" -c:v libx264 -preset fast -crf 18 \
  -pix_fmt yuv420p -c:a aac -b:a 128k "$WORK/clip.mp4"
for i in $(seq 1 "$N"); do cp "$WORK/clip.mp4" "$CLIPS/upload_$i.mp4"; done
log "$N uploads of ${SECS} s 720p30; load $(cut -d' ' -f1-3 /proc/loadavg)"

run_one() {
  local run=$1 db="${TAG}_$run" redis_db
  case $run in python) redis_db=1 ;; rust) redis_db=2 ;; *) echo "unknown run $run" >&2; return 2 ;; esac
  export SUITE_DB_NAME=$db SUITE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/$redis_db"
  export SUITE_MEDIA_ROOT="$WORK/media-$run/"
  mkdir -p "$SUITE_MEDIA_ROOT" "$WORK/$run"
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
  (
    cd "$WORK/app"
    export PATH="$WPATH"
    "$PY" manage.py migrate -v 0
    "$PY" manage.py loaddata -v 0 fixtures/encoding_profiles.json fixtures/categories.json
    "$PY" "$SUITE_DIR/driver.py" upload "$CLIPS"
  ) >"$WORK/$run/setup.log" 2>&1 || { tail -30 "$WORK/$run/setup.log"; return 1; }
  log "$run: $N uploads queued; load $(cut -d' ' -f1-3 /proc/loadavg)"
  local pids=() t0
  (cd "$WORK/app" && PATH="$WPATH" exec "$PY" -m celery -A cms worker -Q short_tasks -c 1 -l INFO \
    --without-gossip --without-mingle --without-heartbeat -n "short@$run") >"$WORK/$run/short.log" 2>&1 &
  pids+=($!)
  t0=$("$PY" -c 'import time; print(time.time())')
  if [ "$run" = python ]; then
    (cd "$WORK/app" && PATH="$WPATH" exec "$PY" -m celery -A cms worker -Q long_tasks -c 1 -Ofair \
      --prefetch-multiplier=1 --loglevel=INFO -n "long@$run") >"$WORK/$run/long.log" 2>&1 &
  else
    REDIS_LOCATION=$SUITE_REDIS_URL POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=5432 POSTGRES_NAME=$db \
      POSTGRES_USER=postgres POSTGRES_PASSWORD=postgres MEDIA_ROOT=$SUITE_MEDIA_ROOT \
      WORKER_HTTP_ADDR="127.0.0.1:0" WORKER_ALLOW_ROOT=true WORKER_HWACCEL=software \
      "$BIN" run -Q long_tasks -c 1 -n "long@$run" >"$WORK/$run/long.log" 2>&1 &
  fi
  pids+=($!)
  PIDS+=("${pids[@]}")
  local rc=0
  (cd "$WORK/app" && "$PY" "$REPO/scripts/bench/backlog.py" watch "$t0" 1800 "$OUT/$run.json") \
    >"$WORK/$run/watch.log" 2>&1 || rc=$?
  log "$run: $(tail -1 "$WORK/$run/watch.log"); load $(cut -d' ' -f1-3 /proc/loadavg)"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  cp "$WORK/$run/long.log" "$OUT/$run-long.log"
  return $rc
}

for run in $WORKERS; do run_one "$run"; done

"$PY" - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, os, sys
out = sys.argv[1]
docs = {r: json.load(open(os.path.join(out, r + ".json"))) for r in ("python", "rust")
        if os.path.exists(os.path.join(out, r + ".json"))}
print("| worker | mean first playable s | all Encodings ended s | everything (sprites too) s |")
print("|---|---|---|---|")
for r, d in docs.items():
    print(f"| {r} | {d['mean_first_playable_s']} | {d['all_done_s']} | {d['everything_s']} |")
if len(docs) == 2:
    p, r = docs["python"], docs["rust"]
    print(f"| ours / Python | {r['mean_first_playable_s'] / p['mean_first_playable_s']:.3f} "
          f"| {r['all_done_s'] / p['all_done_s']:.3f} | {r['everything_s'] / p['everything_s']:.3f} |")
print()
print("| media | " + " | ".join(f"{r} first playable s / all ended s" for r in docs) + " |")
print("|---|" + "---|" * len(docs))
titles = sorted(next(iter(docs.values()))["media"])
for t in titles:
    cells = [f"{d['media'][t]['first_playable_s']} / {d['media'][t]['all_done_s']}" for d in docs.values()]
    print(f"| {t} | " + " | ".join(cells) + " |")
PY
