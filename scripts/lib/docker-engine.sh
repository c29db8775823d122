#!/usr/bin/env bash
#! Sourced helper: make a Docker engine and a Compose usable here, installing/starting them when
#! missing, and pick the client that can drive them (sets DOCKER and COMPOSE).
# Why a picker: a docker 28 client may sit first on PATH without buildx, which makes it fall back
# to the legacy builder (no per-Dockerfile .dockerignore); Debian's 20.10 client has BuildKit built in.

docker_engine_log() { echo "docker-engine: $*" >&2; }

# Installs Debian's docker.io/docker-compose/debootstrap when absent (idempotent).
docker_engine_install() {
  local need=()
  for pkg in docker.io docker-compose debootstrap; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    docker_engine_log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# Starts dockerd in the background when no engine answers, then waits for it (up to 60 s).
docker_engine_start() {
  if "$DOCKER" info >/dev/null 2>&1; then return 0; fi
  docker_engine_log "starting dockerd (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    "$DOCKER" info >/dev/null 2>&1 && return 0
    sleep 1
  done
  docker_engine_log "dockerd did not answer within 60 s; see /var/log/dockerd.log"
  return 1
}

# Entry point: sets DOCKER (a client with BuildKit) and COMPOSE (an array: v2 plugin or 1.29).
docker_engine_ready() {
  docker_engine_install
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=$(command -v docker); fi
  export DOCKER DOCKER_BUILDKIT=1
  docker_engine_start
  if "$DOCKER" compose version >/dev/null 2>&1; then
    COMPOSE=("$DOCKER" compose)
  else
    COMPOSE=(/usr/bin/docker-compose)
  fi
}
