#!/usr/bin/env bash
#! Sourced by scripts/container-suite.sh: the suite's shared state (names, network, services) and
#! the helpers every case uses (SQL and Redis through the service containers, waits, clips).
# Everything the suite creates is named "$SUITE-…" so a run never touches another run's or
# anyone else's containers, volumes or networks, and the exit trap removes exactly those.

FIXTURES=tests/fixtures/mediacms
MEDIA_IN_CTR=/home/mediacms.io/mediacms/media_files
IMAGE=mediacms-worker:latest
REDIS_IMAGE=mediacms-suite/redis:bookworm
PG_IMAGE=mediacms-suite/postgres:bookworm

log() { echo "container-suite: $*" >&2; }
# Ends the case (each case runs in its own subshell) with its reason.
die() { echo "$*" >&2; exit 1; }

# Removes every container, volume and network this run created (by name prefix).
suite_cleanup() {
  local ids
  # Compose names its containers, volumes and networks after the project ($SUITE…) too.
  ids=$("$DOCKER" ps -aq --filter "name=^/?$SUITE" 2>/dev/null || true)
  [ -z "$ids" ] || "$DOCKER" rm -fv $ids >/dev/null 2>&1 || true
  "$DOCKER" volume ls -q --filter "name=^$SUITE" | xargs -r "$DOCKER" volume rm -f >/dev/null 2>&1 || true
  "$DOCKER" network ls -q --filter "name=^$SUITE" | xargs -r "$DOCKER" network rm >/dev/null 2>&1 || true
  # Files the containers wrote as uid 33 under the work dir.
  [ -z "${WORK:-}" ] || rm -rf "$WORK"
}

# Polls `cmd` every second until it succeeds or `secs` pass.
wait_for() {
  local secs=$1; shift
  for _ in $(seq 1 "$secs"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  "$@"
}

# The suite's own Redis and Postgres (test-only images from Debian packages) on its own network.
services_up() {
  "$DOCKER" network create "$SUITE-net" >/dev/null
  "$DOCKER" run -d --name "$SUITE-redis" --network "$SUITE-net" --network-alias redis \
    "$REDIS_IMAGE" >/dev/null
  "$DOCKER" run -d --name "$SUITE-db" --network "$SUITE-net" --network-alias db \
    -e POSTGRES_USER=mediacms -e POSTGRES_PASSWORD=mediacms -e POSTGRES_DB=mediacms \
    "$PG_IMAGE" >/dev/null
  wait_for 60 "$DOCKER" exec "$SUITE-db" pg_isready -q -d mediacms -U mediacms
  wait_for 30 "$DOCKER" exec "$SUITE-redis" redis-cli ping
}

# sql CONTAINER DB QUERY → unaligned tuples.
sql() { "$DOCKER" exec -i "$1" psql -v ON_ERROR_STOP=1 -qtA -U mediacms -d "$2" -c "$3"; }

# A fresh database in CONTAINER with MediaCMS's schema and the reference upload.
load_reference_db() {
  local ctr=$1 db=$2
  "$DOCKER" exec "$ctr" createdb -U mediacms "$db"
  for f in schema.sql upload_example.sql; do
    "$DOCKER" exec -i "$ctr" psql -v ON_ERROR_STOP=1 -q -U mediacms -d "$db" \
      <"$FIXTURES/$f" >/dev/null
  done
}

# The reference upload's original (8 s 1280x720 H.264/AAC, as upload_example.sql describes it),
# generated with lavfi; `secs` makes it longer for the mid-encode cases.
make_original() {
  local dest=$1 secs=${2:-8}
  mkdir -p "$(dirname "$dest")"
  ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=1280x720:rate=25:duration=$secs" \
    -f lavfi -i "sine=frequency=440:duration=$secs" -c:v libx264 -preset ultrafast -pix_fmt yuv420p \
    -c:a aac -shortest "$dest"
}

# The path upload_example.sql stores for media 1's original, relative to MEDIA_ROOT.
ORIGINAL_REL=original/user/refuser/41905ce2087146cdba79c28a24c33a9a.reference_720p.mp4

# publish REDIS_CONTAINER DBNUM MESSAGE_FILE…: LPUSH each captured message onto `long_tasks`, as
# MediaCMS's producer does (priority lists are not needed: order is not under test here).
publish() {
  local ctr=$1 dbn=$2; shift 2
  for f in "$@"; do
    "$DOCKER" exec -i "$ctr" redis-cli -n "$dbn" -x LPUSH long_tasks <"$f" >/dev/null
  done
}

# Media 1's seven long_tasks messages: its sprite task and its six encode_media tasks.
media1_messages() {
  echo "$FIXTURES/messages/produce_sprite_from_video-1.json"
  for i in 1 2 3 4 5 6; do echo "$FIXTURES/messages/encode_media-$i.json"; done
}

# Media 1 is done: every Encoding success, HLS and sprites recorded.
media1_done() {
  local ctr=$1 db=$2
  [ "$(sql "$ctr" "$db" "SELECT count(*) FROM files_encoding WHERE media_id = 1 AND status <> 'success'")" = 0 ] \
    && [ "$(sql "$ctr" "$db" "SELECT (hls_file <> '' AND sprites <> '')::int FROM files_media WHERE id = 1")" = 1 ]
}

# Files under DIR not owned by 33:33 or not world-readable (the web container serves them).
bad_file_modes() {
  find "$1" -type f \( ! -uid 33 -o ! -gid 33 -o ! -perm -o+r \) -printf '%u:%g %m %p\n'
}

# The worker's environment for the suite's services (Redis DB number per case).
worker_env() {
  local dbn=$1 db=$2
  echo "-e REDIS_LOCATION=redis://redis:6379/$dbn -e POSTGRES_HOST=db -e POSTGRES_NAME=$db"
  echo "-e POSTGRES_USER=mediacms -e POSTGRES_PASSWORD=mediacms -e WORKER_HWACCEL=software"
}
