#!/usr/bin/env bash
# What building the worker needs on Debian 12, installed when missing: a C toolchain and libclang
# (ffmpeg-sys-next's bindgen), pkg-config and FFmpeg's development libraries, and the ffmpeg CLI
# the worker runs. Rust itself comes from rustup (README, prerequisites). Idempotent; used by
# `make run` and, through scripts/test-setup.sh, by `make test`.
set -euo pipefail

# Root runs apt itself; anyone else goes through sudo (a fresh Debian user with sudo rights).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# `apt_install PKG…`: installs whichever of PKG… are not installed yet; one apt run for all.
apt_install() {
  local need=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  echo "setup: installing ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
}

apt_install build-essential clang libclang-dev pkg-config ca-certificates \
  libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev \
  libswscale-dev libswresample-dev ffmpeg

command -v cargo >/dev/null || {
  echo "setup: cargo not found: install Rust with rustup (https://rustup.rs) and open a new shell" >&2
  exit 1
}
