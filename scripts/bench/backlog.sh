#!/usr/bin/env bash
# Backlog benchmark: N uploads (default 5 × 20 s 720p30) queued at once through MediaCMS's own
# upload code, BEFORE the long worker starts; then one long worker (`-c 1`) works through them.
# Once MediaCMS's Python `celery_long` (`-c 1 -Ofair --prefetch-multiplier=1`), once
# mediacms-worker (release build, `-c 1`, its defaults: decode-once and playable-first on).
# Per worker: seconds from the worker's start to each media's first playable rendition (first
# h264 Encoding `success`), their mean, and to the last Encoding's end (MediaCMS's rows,
# `update_date`). Same setup as scripts/mediacms-suite.sh (scripts/lib/mediacms-app.sh: its venv
# cache, settings, a private Redis, a scratch database per worker), MediaCMS's short worker beside both.
#
# WORKERS ("python rust"), N (5), SECS (20), OUT (target/bench-backlog). Takes ~5 min on 2 cores.
# Output: $OUT/<run>.json per worker and $OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
WORKERS=${WORKERS:-python rust}
N=${N:-5}
SECS=${SECS:-20}
OUT=${OUT:-$REPO/target/bench-backlog}
BIN=${WORKER_BIN:-$REPO/target/release/mediacms-worker}
T0=$(date +%s)
log() { echo "backlog [$(($(date +%s) - T0)) s]: $*"; }
[ -x "$BIN" ] || { echo "backlog: no $BIN (cargo build --release)" >&2; exit 2; }

# shellcheck source=scripts/lib/mediacms-app.sh
. "$REPO/scripts/lib/mediacms-app.sh"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/bench-backlog.XXXXXX)
TAG="bench_backlog_$$"
PIDS=()
REDIS_PORT=""
cleanup() {
  set +e
  mediacms_app_stop
  # shellcheck disable=SC2046 # one database per worker
  mediacms_app_drop_sites $(printf "${TAG}_%s " $WORKERS)
  rm -rf "$WORK"
}
trap cleanup EXIT

mediacms_app_prepare

# The uploads: one 720p30 clip (testsrc2 + a tone, x264 fast CRF 18, AAC), N copies by name.
CLIPS="$WORK/clips"
mkdir -p "$CLIPS"
ffmpeg -hide_banner -nostdin -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30:duration=$SECS" \
  -f lavfi -i "sine=frequency=440:duration=$SECS" -c:v libx264 -preset fast -crf 18 \
  -pix_fmt yuv420p -c:a aac -b:a 128k "$WORK/clip.mp4"
for i in $(seq 1 "$N"); do cp "$WORK/clip.mp4" "$CLIPS/upload_$i.mp4"; done
log "$N uploads of ${SECS} s 720p30; load $(cut -d' ' -f1-3 /proc/loadavg)"

run_one() {
  local run=$1 redis_db
  case $run in python) redis_db=1 ;; rust) redis_db=2 ;; *) echo "unknown run $run" >&2; return 2 ;; esac
  mkdir -p "$WORK/$run"
  { mediacms_app_site "${TAG}_$run" "$redis_db" "$WORK/media-$run/" &&
    mediacms_app_driver upload "$CLIPS"; } >"$WORK/$run/setup.log" 2>&1 || { tail -30 "$WORK/$run/setup.log"; return 1; }
  log "$run: $N uploads queued; load $(cut -d' ' -f1-3 /proc/loadavg)"
  local pids=() t0
  start_short_worker "$run" "$WORK/$run/short.log"
  pids+=("$LAST_PID")
  t0=$("$PY" -c 'import time; print(time.time())')
  start_long_worker "$run" "$run" "$WORK/$run/long.log" "$BIN"
  pids+=("$LAST_PID")
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
