#!/usr/bin/env bash
#! The container suite: build the image from a clean checkout with docker/Dockerfile and run the
#! worker as users do (PID 1, compose --scale, stop/kill, GPU-node compose) against real containers.
# Prints one line per case and last `container suite: N cases, N passed`; exits non-zero on any
# failure. Installs and starts the Docker engine when missing (scripts/lib/docker-engine.sh) and
# makes the base images locally when no registry answers (scripts/base-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib/docker-engine.sh
. scripts/lib/docker-engine.sh
# shellcheck source=scripts/container-suite/lib.sh
. scripts/container-suite/lib.sh
# shellcheck source=scripts/container-suite/cases.sh
. scripts/container-suite/cases.sh
# shellcheck source=scripts/container-suite/compose.sh
. scripts/container-suite/compose.sh

SUITE_STARTED=$(date +%s)
docker_engine_ready
./scripts/base-images.sh >&2
# No dash: Compose 1.29 strips it from project names, and cleanup matches on this prefix.
SUITE=ctrsuite$$
WORK=$(mktemp -d /var/tmp/container-suite.XXXXXX)
trap suite_cleanup EXIT

# A clean checkout: the files a clone has (tracked + untracked-not-ignored), nothing from target/.
# It lives at a fixed path so BuildKit's context transfer stays incremental between runs; vendor/
# (containers here cannot verify TLS to crates.io) is refreshed only when Cargo.lock changes.
CTX=$ROOT/target/container-suite/context
prepare_context() {
  mkdir -p "$CTX"
  find "$CTX" -mindepth 1 -maxdepth 1 ! -name vendor ! -name .vendor-lock -exec rm -rf {} +
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -c | tar -x -C "$CTX"
  if ! cmp -s "$CTX/Cargo.lock" "$CTX/.vendor-lock" 2>/dev/null; then
    rm -rf "$CTX/vendor"
    (cd "$CTX" && cargo vendor --locked -q vendor >/dev/null)
    cp "$CTX/Cargo.lock" "$CTX/.vendor-lock"
  fi
}

build_images() {
  local t0=$SECONDS
  "$DOCKER" build -q --network host -t "$IMAGE" -f "$CTX/docker/Dockerfile" "$CTX" >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log" >&2; return 1; }
  BUILD_SECS=$((SECONDS - t0))
  "$DOCKER" build -q --network host -t "$REDIS_IMAGE" -f docker/test-services/redis.Dockerfile \
    docker/test-services >/dev/null
  "$DOCKER" build -q --network host -t "$PG_IMAGE" -f docker/test-services/postgres.Dockerfile \
    docker/test-services >/dev/null
}

PASSED=0 TOTAL=0
# run_case NAME FUNCTION [ARG…]: one line per case; a failing case prints why, the suite goes on.
run_case() {
  local name=$1 t0=$SECONDS out rc
  shift
  # CONTAINER_SUITE_ONLY=REGEX runs only the matching cases (while working on one).
  if [ -n "${CONTAINER_SUITE_ONLY:-}" ] && ! [[ $name =~ $CONTAINER_SUITE_ONLY ]]; then return 0; fi
  TOTAL=$((TOTAL + 1))
  # errexit inside the case's subshell (a command substitution does not inherit it): any failing
  # step ends the case as a failure.
  set +e
  out=$(
    set -eE
    trap 'echo "failed: $BASH_COMMAND (${FUNCNAME[0]:-} line $LINENO)"; tail -5 "$WORK/compose.log" 2>/dev/null' ERR
    "$@" 2>&1
  )
  rc=$?
  set -e
  if [ "$rc" = 0 ]; then
    PASSED=$((PASSED + 1))
    echo "ok   $name ($((SECONDS - t0)) s)${out:+: $(echo "$out" | tail -1)}"
  else
    echo "FAIL $name ($((SECONDS - t0)) s)"
    echo "$out" | tail -25 | sed 's/^/     /'
  fi
}

log "context"; prepare_context
log "building $IMAGE from $CTX with docker/Dockerfile"
build_images
SIZE_MB=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d", $1/1e6}')
BASE_MB=$("$DOCKER" image inspect -f '{{.Size}}' debian:bookworm-slim | awk '{printf "%d", $1/1e6}')
echo "image $IMAGE: $SIZE_MB MB (debian:bookworm-slim $BASE_MB MB), built in $BUILD_SECS s"
services_up

run_case "Dockerfile.nvidia builds" case_nvidia_build
run_case "image: uid 33, probe usable, HEALTHCHECK healthy" case_image
run_case "reference upload encoded by the container as PID 1" case_pid1_encode
run_case "docker stop mid-encode: drained+acked or requeued in grace" case_stop
run_case "docker kill mid-encode: another replica re-runs it after the lease" case_kill
run_case "MediaCMS 7.3 compose + override: config" case_compose_config
run_case "MediaCMS 7.3 stack: --scale celery_long=3, three uploads, each task once" case_compose_scale
# Each node file gets its own upload (media 90, 91, …) so the cases do not collide.
node_media=90
for node in docker/docker-compose.*-node.yaml; do
  run_case "$(basename "$node"): joins the stack, serves tasks, falls back to software" \
    case_node "$node" "$node_media"
  node_media=$((node_media + 1))
done

echo "container suite: $TOTAL cases, $PASSED passed ($(( $(date +%s) - SUITE_STARTED )) s)"
[ "$PASSED" = "$TOTAL" ]
