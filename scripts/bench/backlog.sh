#!/usr/bin/env bash
# The backlog benchmark (issue 18): N uploads queued at once by the real MediaCMS app, then one
# long worker with `-c 1` serves them — MediaCMS's Python celery_long, then ours, on fresh
# databases, media roots and Redis DBs (MediaCMS's Python celery_short serves short_tasks both
# times). Per run: seconds from the long worker's start to each media's first playable
# rendition (an mp4 Encoding in `success`) and until every media is fully encoded (every
# Encoding final and its sprite strip made). Run it on an otherwise idle machine.
#
#   scripts/bench/backlog.sh                      # N=5 uploads of 20 s 1280x720 with audio
#   RUNS="python rust rust" RUST_ARGS="--decode-once=false" scripts/bench/backlog.sh
#
# Writes target/bench-backlog/{python,rust…}.json and summary.md (printed last). MEDIACMS_SRC as
# for scripts/mediacms-suite.sh; MEDIACMS_WORKER_BIN to use another build than --release.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
N=${N:-5}
SECS=${SECS:-20}
RUNS=${RUNS:-python rust}
RUST_ARGS=${RUST_ARGS:-}
OUT="$REPO/target/bench-backlog"
mkdir -p "$OUT"
# shellcheck source=scripts/lib/mediacms-app.sh
. "$REPO/scripts/lib/mediacms-app.sh"
WORK=$(mktemp -d /tmp/bench-backlog.XXXXXX)
TAG="backlog_$$_$(date +%s)"
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  mediacms_app_stop_redis
  psql -h 127.0.0.1 -U postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE '${TAG}_%'" \
    | while read -r db; do psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "backlog: $*" >&2; }

mediacms_app_prepare
WORKER_BIN=${MEDIACMS_WORKER_BIN:-}
if [ -z "$WORKER_BIN" ]; then
  cargo build -q --release --bin mediacms-worker
  WORKER_BIN="$REPO/target/release/mediacms-worker"
fi

# N different 720p clips with audio (a different pattern and tone each, so no two encode alike).
mkdir -p "$WORK/clips"
patterns=(testsrc2 smptehdbars mandelbrot rgbtestsrc testsrc)
for i in $(seq 1 "$N"); do
  src=${patterns[$(((i - 1) % ${#patterns[@]}))]}
  ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i "$src=size=1280x720:rate=30" \
    -f lavfi -i "sine=frequency=$((300 + 50 * i)):sample_rate=44100" -t "$SECS" \
    -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac "$WORK/clips/upload_$i.mp4"
done

i=0
for run in $RUNS; do
  i=$((i + 1))
  kind=${run%%[^a-z]*}
  label="${run}_$i"
  mediacms_app_site "${TAG}_$i" "$i" "$WORK/media-$i/" >"$WORK/$label.setup.log" 2>&1
  mediacms_app_driver upload "$WORK/clips" >>"$WORK/$label.setup.log" 2>&1
  log "$label: $N uploads queued; starting the workers"
  start_short_worker "$label" "$WORK/$label.short.log"
  PIDS+=("$LAST_PID")
  short=$LAST_PID
  t0=$(date +%s.%N)
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  if [ "$kind" = rust ]; then
    # shellcheck disable=SC2086 # RUST_ARGS is a list of flags
    start_long_worker rust "$label" "$WORK/$label.long.log" "$WORKER_BIN" $RUST_ARGS
  else
    start_long_worker python "$label" "$WORK/$label.long.log"
  fi
  PIDS+=("$LAST_PID")
  long=$LAST_PID
  mediacms_app_driver watch "$t0" "${WAIT_SECS:-1800}" "$OUT/$label.json" >&2 || log "$label: not all done"
  kill -TERM "$long" "$short" 2>/dev/null || true
  wait "$long" "$short" 2>/dev/null || true
  echo "$label $load" >>"$WORK/loads"
  log "$label: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])))' "$OUT/$label.json")"
done

python3 - "$OUT" "$WORK/loads" "$N" "$SECS" "$RUST_ARGS" >"$OUT/summary.md" <<'PY'
import json, os, statistics, sys
out, loads_file, n, secs, rust_args = sys.argv[1:6]
loads = dict(line.split(" ", 1) for line in open(loads_file).read().splitlines())
rows, base = [], None
for label in loads:
    doc = json.load(open(os.path.join(out, label + ".json")))
    first = [m.get("first_playable_s") for m in doc.values()]
    done = [m.get("done_s") for m in doc.values()]
    ok = all(v is not None for v in first + done) and len(doc) == int(n)
    mean_first = statistics.mean(first) if ok else float("nan")
    all_done = max(done) if ok else float("nan")
    if label.startswith("python") and base is None:
        base = (mean_first, all_done)
    rows.append((label, mean_first, all_done, sorted(first, key=lambda v: v or 0), loads[label].strip()))
print(f"# Backlog: {n} uploads of {secs} s 1280x720 queued at once, one `-c 1` long worker")
print()
print(f"Rust worker flags: `{rust_args or '(defaults)'}`. Seconds from the long worker's start.")
print()
print("| run | mean to first playable s | all fully encoded s | first playable / Python | all done / Python | each media's first playable s | load at start |")
print("|---|---|---|---|---|---|---|")
for label, mf, ad, firsts, load in rows:
    r1 = f"{mf / base[0]:.2f}x" if base else "-"
    r2 = f"{ad / base[1]:.2f}x" if base else "-"
    print(f"| {label} | {mf:.1f} | {ad:.1f} | {r1} | {r2} | {', '.join(str(v) for v in firsts)} | {load} |")
PY
cat "$OUT/summary.md"
