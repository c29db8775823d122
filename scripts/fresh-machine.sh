#!/usr/bin/env bash
#! The README's set-up on a fresh machine: a plain debian:bookworm-slim container (no services, no
#! build packages, nothing of ours) with a clean clone of this repository mounted runs `make setup`
#! (what `make test` runs first), the build of every target, and one test against each service the
#! set-up installed and started.
# Given to the container, as a user's machine would have them: `make` (the README's prerequisite),
# this machine's rustup toolchain (read-only, on PATH), and the site's extra CA certificates (this
# workplace reaches the package registries through a TLS-inspecting egress; a user's machine trusts
# its own network's CA the same way). Nothing else: no apt packages, no services, no venv, no target/.
# Usage: scripts/fresh-machine.sh   (about 10 min on 2 cores: apt, crates, a full debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/docker-engine.sh
docker_engine_ready
scripts/base-images.sh

work=$(mktemp -d /var/tmp/fresh-machine.XXXXXX)
trap 'rm -rf "$work"' EXIT
git clone -q --no-hardlinks "$PWD" "$work/clone"
echo "fresh-machine: clean clone of $(git rev-parse --short HEAD) in a plain debian:bookworm-slim"

ca_mounts=()
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -e "$crt" ] && ca_mounts+=(-v "$crt:$crt:ro")
done

# Inside: the prerequisites line of the README, then its test command's set-up, the build, and one
# test binary that needs Postgres + Redis (store/signals) and one that needs RabbitMQ.
"$DOCKER" run --rm -i "${ca_mounts[@]}" \
  -v "$(rustc --print sysroot):/opt/rust:ro" -v "$work/clone:/src" -w /src \
  -e PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt -e CI=true \
  debian:bookworm-slim bash -euo pipefail -s <<'INSIDE'
echo "fresh-machine: prerequisites (make)"
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null
for svc in psql redis-server rabbitmq-server ffmpeg clang; do
  command -v "$svc" >/dev/null && { echo "fresh-machine: $svc already present: not a fresh machine" >&2; exit 1; }
done
echo "fresh-machine: make setup"
make setup
echo "fresh-machine: cargo build --all-targets"
cargo build --all-targets --quiet
echo "fresh-machine: cargo test --test store_signals --test amqp_broker"
cargo test --quiet --test store_signals --test amqp_broker -- --test-threads=2 2>&1 | grep -E '^test result|FAILED|panicked' 
INSIDE
echo "fresh-machine: passed"
