#!/usr/bin/env bash
# Hardware check for an NVIDIA machine, one command, under 5 minutes:
#   1. the GPUs (nvidia-smi -L);
#   2. the worker's own capability probe (`mediacms-worker probe --json`, then the text report);
#   3. a real encode of a generated 1080p clip through the decode-offload path
#      (NVDEC -> scale_cuda -> hwdownload -> libx264), with a software fallback if it fails;
#   4. a try of h264_nvenc;
# and a summary of which path ran and why. Expected on H100/H200: NVDEC + CUDA scaling work,
# NVENC is unavailable (no encoder engine on Hopper), software encode is used.
#
# Usage: scripts/device-check.sh            (builds target/release/mediacms-worker if missing)
#        MEDIACMS_WORKER_BIN=/path/bin scripts/device-check.sh
# Missing tools are installed with apt-get when possible; without network it carries on with
# what is there and says what it skipped. Exit status: 0 when the checks ran (whatever they found).
set -uo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }
note() { printf '  -> %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

BIN=${MEDIACMS_WORKER_BIN:-target/release/mediacms-worker}
WORK=$(mktemp -d /tmp/device-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# --- 0. packages ------------------------------------------------------------------------------
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
if [ ! -x "$BIN" ]; then
  # Only a build needs the headers and bindgen's clang.
  for pkg in pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev \
             libavfilter-dev libavdevice-dev libswscale-dev libswresample-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
  done
fi
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
         $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
    note "apt-get failed (offline?); continuing with what is installed"
  fi
fi

# --- 1. GPUs ----------------------------------------------------------------------------------
step "GPUs"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L || note "nvidia-smi failed"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
else
  note "nvidia-smi not found: no NVIDIA driver userspace here"
fi
command -v ffmpeg >/dev/null || { note "ffmpeg missing and not installable: nothing more to check"; exit 0; }
ffmpeg -hide_banner -version | head -1

# --- 2. the worker's probe --------------------------------------------------------------------
step "mediacms-worker probe --json"
if [ -z "${MEDIACMS_WORKER_BIN:-}" ] && [ ! -x "$BIN" ] && command -v cargo >/dev/null; then
  note "building $BIN (cargo build --release)"
  timeout 240 cargo build --release --quiet || note "build failed or timed out"
fi
if [ -x "$BIN" ]; then
  timeout 120 "$BIN" probe --json || note "probe --json exited $? (subcommand missing in this build?)"
  step "mediacms-worker probe (text)"
  timeout 120 "$BIN" probe || note "probe exited $?"
else
  note "no worker binary and no cargo: skipped (set MEDIACMS_WORKER_BIN or carry target/release)"
fi

# --- 3. real encode via the decode-offload path -----------------------------------------------
step "generating a 10 s 1080p30 H.264 + AAC source"
SRC=$WORK/src_1080p.mp4
ffmpeg -hide_banner -nostdin -v error -y -f lavfi -i testsrc2=size=1920x1080:rate=30 \
  -f lavfi -i sine=frequency=440 -t 10 -c:v libx264 -preset ultrafast -pix_fmt yuv420p \
  -c:a aac "$SRC" || { note "could not generate the source clip"; exit 0; }

# MediaCMS's 720p h264 rendition, with the decode and scale moved to the GPU.
OUT=$WORK/out_720p.mp4
step "decode offload: -hwaccel cuda -> scale_cuda -> hwdownload,format=nv12 -> libx264"
t0=$(now)
if ffmpeg -hide_banner -nostdin -v error -y -hwaccel cuda -hwaccel_output_format cuda -i "$SRC" \
     -vf scale_cuda=1280:720:interp_algo=lanczos:format=nv12,hwdownload,format=nv12,format=yuv420p \
     -c:v libx264 -preset medium -crf 23 \
     -pix_fmt yuv420p -c:a aac -b:a 128k "$OUT" 2>"$WORK/offload.err"; then
  offload="works ($(since "$t0"))"
  path="NVDEC + scale_cuda decode offload, libx264 software encode"
else
  offload="FAILED: $(tail -n 3 "$WORK/offload.err" | tr '\n' ' ')"
  note "$offload"
  step "software path: scale -> libx264"
  t0=$(now)
  if ffmpeg -hide_banner -nostdin -v error -y -i "$SRC" -vf scale=1280:720 -c:v libx264 \
       -preset medium -crf 23 -pix_fmt yuv420p -c:a aac -b:a 128k "$OUT" 2>"$WORK/sw.err"; then
    path="software decode + scale + libx264 ($(since "$t0")), because the offload failed"
  else
    path="none: software encode failed too: $(tail -n 3 "$WORK/sw.err" | tr '\n' ' ')"
  fi
fi
if [ -s "$OUT" ] && command -v ffprobe >/dev/null; then
  ffprobe -v error -show_entries stream=codec_name,width,height:format=duration -of compact "$OUT"
fi

# --- 4. NVENC ---------------------------------------------------------------------------------
step "h264_nvenc try (60 frames)"
t0=$(now)
# Frames from system memory, so the verdict is about the encoder alone, not NVDEC.
if ffmpeg -hide_banner -nostdin -v error -y -i "$SRC" -frames:v 60 -c:v h264_nvenc \
     -f null - 2>"$WORK/nvenc.err"; then
  nvenc="works ($(since "$t0"))"
else
  nvenc="unavailable: $(tail -n 3 "$WORK/nvenc.err" | tr '\n' ' ')"
fi
note "$nvenc"

step "summary"
echo "decode offload (NVDEC + scale_cuda): $offload"
echo "h264_nvenc:                           $nvenc"
echo "encode path that ran:                 $path"
exit 0
