#!/usr/bin/env bash
# The suite's clips, made with ffmpeg's lavfi sources: one per path MediaCMS treats differently.
set -euo pipefail
out=$1
ff() { ffmpeg -hide_banner -loglevel error -nostdin -y "$@"; }
tone() { echo "sine=frequency=$1:sample_rate=44100"; }
# 8 s 1280x720 with audio: the whole ladder up to 720p.
ff -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i "$(tone 440)" -t 8 \
   -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac "$out/hd_8s.mp4"
# Portrait: stored 640x360 with a 90-degree rotation matrix (a phone's video).
ff -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i "$(tone 550)" -t 4 \
   -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac -metadata:s:v:0 rotate=90 "$out/portrait_rot90.mp4"
# Interlaced PAL (top field first) in MPEG-TS.
ff -f lavfi -i testsrc2=size=720x576:rate=25 -f lavfi -i "$(tone 660)" -t 4 \
   -vf setfield=tff -c:v libx264 -preset veryfast -pix_fmt yuv420p -flags +ildct+ilme \
   -x264-params tff=1 -c:a aac "$out/interlaced_pal.ts"
# No audio stream.
ff -f lavfi -i testsrc2=size=640x360:rate=25 -t 4 -c:v libx264 -preset veryfast -pix_fmt yuv420p \
   "$out/no_audio.mp4"
# 2 s: shorter than the 3 s where MediaCMS's preview GIF starts.
ff -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i "$(tone 770)" -t 2 \
   -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac "$out/short_2s.mp4"
# Over CHUNKIZE_VIDEO_DURATION (300 s): the chunk path, at a tiny size and frame rate.
ff -f lavfi -i testsrc2=size=256x144:rate=10 -f lavfi -i "sine=frequency=330:sample_rate=22050" -t 302 \
   -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac -b:a 32k "$out/long_302s.mp4"
