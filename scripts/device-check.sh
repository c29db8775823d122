#!/usr/bin/env bash
# Hardware check for an NVIDIA machine, one command, a few minutes; exits non-zero when any
# required step fails (expected output: docker/README.md, "Checking a GPU machine").
# Required steps:
#   1. the worker's probe (text): NVDEC and scale_cuda work on a CUDA device;
#   2. `probe --json`: the per-codec decisions are there, and H.264 High 10 is planned with
#      software decode (NVDEC gives no CUDA frames for it);
#   3. the 8-bit decode-offload rung, exactly as the planner writes it (NVDEC -> scale_cuda ->
#      hwdownload -> libx264, golden in tests/goldens/plan/hw.rs), on a generated 1080p clip;
#   4. a High 10 clip on the software-decode path the planner uses for it (CPU decode ->
#      hwupload_cuda -> scale_cuda -> hwdownload -> libx264), without an error.
# Reported, not required: `-hwaccel cuda` on the High 10 clip (FFmpeg 5.1.9's source says it
# stops at scale_cuda: this shows whether that holds here) and an h264_nvenc try (H100/H200
# have NVDEC but no NVENC).
#
# Usage: scripts/device-check.sh            (builds target/release/mediacms-worker if missing)
#        MEDIACMS_WORKER_BIN=/path/bin scripts/device-check.sh
#        DEVICE=1 scripts/device-check.sh   (CUDA index to use, default 0)
set -uo pipefail
cd "$(dirname "$0")/.."

BIN=${MEDIACMS_WORKER_BIN:-target/release/mediacms-worker}
DEV=${DEVICE:-0}
WORK=$(mktemp -d /tmp/device-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
required=0
passed=0

step() { printf '\n=== %s\n' "$*"; }
note() { printf '  -> %s\n' "$*"; }
# `check NAME CMD…`: a required step; prints PASS/FAIL and the tail of its output on failure.
check() {
  local name=$1
  shift
  required=$((required + 1))
  if "$@" >"$WORK/step.out" 2>&1; then
    passed=$((passed + 1))
    printf '=== %-60s PASS %s\n' "$name" "$(tail -n 1 "$WORK/step.out")"
  else
    printf '=== %-60s FAIL\n' "$name"
    tail -n 15 "$WORK/step.out" | sed 's/^/  | /'
  fi
}
# `ff ARGS…`: the real ffmpeg, quiet, the way the worker's runner calls it.
ff() { timeout 300 ffmpeg -hide_banner -nostdin -v error -y "$@"; }
# `video_of FILE`: "h264 1280x720" when FILE holds a decodable video stream.
video_of() {
  ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,width,height \
    -of csv=p=0:s=x "$1" | sed 's/x/ /'
}

# --- tools ---------------------------------------------------------------------------------
for tool in ffmpeg ffprobe python3; do
  command -v "$tool" >/dev/null || { echo "device-check: $tool is missing" >&2; exit 2; }
done
if [ ! -x "$BIN" ]; then
  command -v cargo >/dev/null || { echo "device-check: no $BIN and no cargo" >&2; exit 2; }
  step "building $BIN (cargo build --release)"
  timeout 480 cargo build --release --quiet || { echo "device-check: build failed" >&2; exit 2; }
fi

step "GPUs"
nvidia-smi -L 2>/dev/null || note "nvidia-smi not available"
ffmpeg -hide_banner -version | head -1

# --- 1-2. the worker's probe ---------------------------------------------------------------
step "mediacms-worker probe --hw-device $DEV"
timeout 180 "$BIN" probe --hw-device "$DEV" | tee "$WORK/probe.txt"
probe_text() {
  grep -q "^nvidia \[$DEV\]" "$WORK/probe.txt" \
    && grep -Eq '^  nvdec +works' "$WORK/probe.txt" \
    && grep -Eq '^  scale_cuda +works' "$WORK/probe.txt" \
    && echo "nvdec + scale_cuda work on $DEV"
}
check "probe: NVDEC and scale_cuda work" probe_text

probe_json() {
  timeout 180 "$BIN" probe --json --hw-device "$DEV" >"$WORK/probe.json" || return 1
  python3 - "$WORK/probe.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
h264 = next(d for d in doc["decisions"] if d["codec"] == "h264")
route = next(i for i in h264["inputs"] if i["source"] == "h264 High 10")
assert h264["backend"] in ("nvenc", "nvdec"), f"h264 -> {h264['backend']}: {h264['reason'][:300]}"
assert route["decode"] == "software", f"High 10 route: {route}"
print(f"h264 -> {h264['backend']} on {h264['devices']}; High 10 decode={route['decode']}")
PY
}
check "probe --json: decisions, High 10 decoded in software" probe_json

# --- 3-4. the plan's argv on real clips ----------------------------------------------------
SRC8=$WORK/src_8bit.mp4
SRC10=$WORK/src_high10.mp4
step "generating 10 s 1080p30 clips: H.264 8-bit and High 10 (+ AAC)"
for spec in "$SRC8 yuv420p" "$SRC10 yuv420p10le"; do
  set -- $spec
  ff -f lavfi -i testsrc2=size=1920x1080:rate=30 -f lavfi -i sine=frequency=440 -t 10 \
    -c:v libx264 -preset ultrafast -pix_fmt "$2" -c:a aac "$1" \
    || { echo "device-check: cannot generate $1" >&2; exit 2; }
done
ffprobe -v error -show_entries stream=profile,pix_fmt -of csv=p=0 "$SRC10" | head -1

KF='expr:gte(t,n_forced*4)'
# MediaCMS's h264-720 rendition as the planner writes it for the decode offload.
offload_8bit() {
  ff -hwaccel cuda -hwaccel_device "$DEV" -hwaccel_output_format cuda -i "$SRC8" \
    -c:v libx264 \
    -filter:v "scale_cuda=1280:720:interp_algo=lanczos:format=nv12,hwdownload,format=nv12,format=yuv420p,fps=fps=30" \
    -pix_fmt yuv420p -crf 23 -c:a aac -b:a 128k -ac 2 -maxrate 3750k -bufsize 3750k \
    -force_key_frames "$KF" -x264-params keyint=240:keyint_min=120 -preset medium \
    -profile:v main -level 4.2 -strict -2 "$WORK/out8.mp4" && video_of "$WORK/out8.mp4"
}
check "8-bit H.264 -> 720p via NVDEC + scale_cuda + libx264" offload_8bit

# High 10: decoded on the CPU, uploaded to the GPU's scaler (the NVENC route's filter chain),
# downloaded into libx264 so the step runs on GPUs without NVENC too.
high10_upload() {
  ff -i "$SRC10" -c:v libx264 \
    -filter:v "fps=fps=30,format=nv12,hwupload_cuda=device=$DEV,scale_cuda=1280:720:interp_algo=lanczos:format=nv12,hwdownload,format=nv12,format=yuv420p" \
    -pix_fmt yuv420p -crf 23 -c:a aac -b:a 128k -ac 2 -maxrate 3750k -bufsize 3750k \
    -force_key_frames "$KF" -preset medium -profile:v main -level 4.2 -strict -2 \
    "$WORK/out10.mp4" && video_of "$WORK/out10.mp4"
}
check "High 10 H.264 -> 720p, software decode + hwupload_cuda" high10_upload

# --- reported, not required ----------------------------------------------------------------
step "High 10 through -hwaccel cuda (expected to fail at scale_cuda)"
if ff -hwaccel cuda -hwaccel_device "$DEV" -hwaccel_output_format cuda -i "$SRC10" -t 2 \
     -vf scale_cuda=1280:720:format=nv12,hwdownload,format=nv12 -f null - 2>"$WORK/nvdec10.err"; then
  note "it worked: this GPU/driver decodes High 10 to CUDA frames (the planner stays conservative)"
elif grep -q "Impossible to convert" "$WORK/nvdec10.err"; then
  note "failed at scale_cuda, as FFmpeg 5.1.9's source says: $(grep -m1 Impossible "$WORK/nvdec10.err")"
else
  note "failed for another reason: $(tail -n 1 "$WORK/nvdec10.err")"
fi

step "h264_nvenc try (60 frames)"
if ff -i "$SRC8" -frames:v 60 -c:v h264_nvenc -gpu "$DEV" -f null - 2>"$WORK/nvenc.err"; then
  note "h264_nvenc works"
else
  note "unavailable: $(tail -n 2 "$WORK/nvenc.err" | tr '\n' ' ')"
fi

step "device-check: $passed of $required required steps passed"
[ "$passed" -eq "$required" ]
