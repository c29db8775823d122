#!/usr/bin/env bash
#! Make the base images docker/Dockerfile names (debian:bookworm-slim, rust:1-bookworm) locally
#! when they are missing and no registry can be reached: a debootstrap'd Debian and a Rust builder
#! from it plus this machine's own Rust toolchain. Each stand-in is announced on stdout.
# The Dockerfile stays exactly what a user with a registry builds; only the tags are made here.
# Usage: scripts/base-images.sh   (idempotent; a present tag is left alone)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/docker-engine.sh
. scripts/lib/docker-engine.sh
docker_engine_ready

# The mirror apt already uses here (deb822 or one-line sources), so debootstrap needs no other.
debian_mirror() {
  local uri
  uri=$(grep -hsE '^URIs:.*/debian/?$' /etc/apt/sources.list.d/*.sources | head -1 | awk '{print $2}')
  [ -n "$uri" ] || uri=$(grep -hsE '^deb .*/debian/? bookworm' /etc/apt/sources.list | head -1 | awk '{print $2}')
  echo "${uri:-http://deb.debian.org/debian}"
}

has_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

make_debian_slim() {
  local dir mirror
  dir=$(mktemp -d /var/tmp/bookworm-root.XXXXXX)
  mirror=$(debian_mirror)
  echo "base-images: debian:bookworm-slim missing; making a local stand-in (debootstrap minbase from $mirror)"
  debootstrap --variant=minbase bookworm "$dir" "$mirror" >/tmp/base-images-debootstrap.log 2>&1 \
    || { tail -20 /tmp/base-images-debootstrap.log >&2; return 1; }
  # Like the real slim image: no downloaded .debs, apt lists, docs, man pages or locales, and dpkg
  # told to keep leaving them out of later installs (so image sizes measured on it are real-ish).
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
  cat >"$dir/etc/dpkg/dpkg.cfg.d/slim-image" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
  cat >"$dir/etc/apt/apt.conf.d/slim-image" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
CFG
  tar -C "$dir" -c . | "$DOCKER" import -c 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
  rm -rf "$dir"
  echo "base-images: made local stand-in debian:bookworm-slim ($(image_mb debian:bookworm-slim) MB)"
}

# rust:1-bookworm is buildpack-deps:bookworm + rustup under /usr/local; the stand-in has the same
# PATH/RUSTUP_HOME/CARGO_HOME layout, the C toolchain cargo links with, and the host's stable Rust.
make_rust_builder() {
  local ctx toolchain
  toolchain=$(rustc --print sysroot)
  ctx=$(mktemp -d /var/tmp/rust-builder.XXXXXX)
  echo "base-images: rust:1-bookworm missing; making a local stand-in from debian:bookworm-slim + $toolchain"
  mkdir -p "$ctx/toolchain"
  cp -a "$toolchain/bin" "$toolchain/lib" "$toolchain/libexec" "$ctx/toolchain/"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git gcc g++ libc6-dev make \
      pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rustup/toolchains/stable
RUN mkdir -p /usr/local/cargo/bin \
 && ln -s /usr/local/rustup/toolchains/stable/bin/* /usr/local/cargo/bin/
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DOCKERFILE
  "$DOCKER" build -q --network host -t rust:1-bookworm "$ctx" >/dev/null
  rm -rf "$ctx"
  echo "base-images: made local stand-in rust:1-bookworm ($("$DOCKER" run --rm rust:1-bookworm rustc --version))"
}

image_mb() { "$DOCKER" image inspect -f '{{.Size}}' "$1" | awk '{printf "%d", $1/1000000}'; }

has_image debian:bookworm-slim || make_debian_slim
has_image rust:1-bookworm || make_rust_builder
echo "base-images: ready (debian:bookworm-slim, rust:1-bookworm)"
