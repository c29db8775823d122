# The real MediaCMS as a producer and an oracle, shared by the differential suite
# (scripts/mediacms-suite.sh) and the backlog benchmark (scripts/bench/backlog.sh): a private
# copy of its tree with settings from the environment, its venv, a private Redis, and its
# workers (or ours) started the way each is run in production. Source it; it sets globals.
#
# Needs: REPO (the repo root), WORK (a temp dir this run owns), MEDIACMS_SRC or the default
# ../shared/mediacms/app-8.3.2. Sets: SRC, VENV, PY, WPATH, REDIS_PORT.

MEDIACMS_APP_DIR="$REPO/scripts/mediacms_suite"

# mediacms_app_prepare: check the source, build (or reuse) its venv, copy the tree, start Redis.
mediacms_app_prepare() {
  SRC=${MEDIACMS_SRC:-../shared/mediacms/app-8.3.2}
  case "$SRC" in /*) ;; *) SRC="$REPO/$SRC" ;; esac
  if [ ! -f "$SRC/manage.py" ] || [ ! -f "$SRC/requirements.txt" ]; then
    echo "no MediaCMS source at $SRC (set MEDIACMS_SRC; README \"The MediaCMS differential suite\")" >&2
    return 2
  fi
  # MediaCMS's venv, cached outside the clone and keyed by its requirements, built under a lock
  # so two runs starting together do not race.
  local cache=${XDG_CACHE_HOME:-$HOME/.cache}/mediacms-worker
  VENV="$cache/venv-$(sha256sum "$SRC/requirements.txt" | cut -c1-16)"
  mkdir -p "$cache"
  (
    flock 9
    # Built in place (a venv's scripts name their own path, so it cannot be moved) and marked
    # complete last: an interrupted build is thrown away and redone.
    if [ ! -f "$VENV/.complete" ]; then
      echo "creating MediaCMS venv $VENV (cold cache)" >&2
      rm -rf "$VENV"
      python3 -m venv "$VENV"
      "$VENV/bin/pip" install -q --disable-pip-version-check -r "$SRC/requirements.txt"
      touch "$VENV/.complete"
    fi
  ) 9>"$cache/venv.lock"
  PY="$VENV/bin/python"

  # MediaCMS writes logs/ and media_files/ under its tree: a private copy, with our settings.
  cp -a "$SRC" "$WORK/app"
  cp "$MEDIACMS_APP_DIR/local_settings.py" "$WORK/app/cms/local_settings.py"
  echo "mediacms-suite-secret-key-not-for-production" >"$WORK/app/.secret_key"
  # MediaCMS's sprites run ImageMagick's `convert` from PATH: ImageMagick's own, first on the
  # workers' PATH (a machine may have another program of that name earlier on PATH).
  mkdir -p "$WORK/bin"
  local im
  for im in /usr/bin/convert /usr/local/bin/magick; do
    [ -x "$im" ] && "$im" -version 2>/dev/null | grep -q ImageMagick && { ln -s "$im" "$WORK/bin/convert"; break; }
  done
  WPATH="$WORK/bin:$VENV/bin:$PATH"

  # A private Redis on a free port: nobody else's keys; mediacms_app_stop shuts it down.
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$WORK" --logfile "$WORK/redis.log" >/dev/null
  local _
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# mediacms_app_stop: the EXIT trap's first half — every worker in PIDS stopped and reaped, then
# the private Redis shut down.
mediacms_app_stop() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  [ -n "${REDIS_PORT:-}" ] && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1
  return 0
}

# mediacms_app_drop_sites DB…: the scratch databases, gone.
mediacms_app_drop_sites() {
  local db
  for db in "$@"; do psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1; done
  return 0
}

# mediacms_app_site DB REDIS_DB MEDIA_ROOT: a fresh site — database migrated with MediaCMS's
# fixtures, an empty media root — and the SUITE_* environment every process of it reads.
mediacms_app_site() {
  export SUITE_DB_NAME=$1 SUITE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/$2" SUITE_MEDIA_ROOT=$3
  mkdir -p "$SUITE_MEDIA_ROOT"
  cp -a "$WORK/app/media_files/userlogos" "$SUITE_MEDIA_ROOT/" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $SUITE_DB_NAME" >/dev/null
  (
    cd "$WORK/app"
    export PATH="$WPATH"
    "$PY" manage.py migrate -v 0
    "$PY" manage.py loaddata -v 0 fixtures/encoding_profiles.json fixtures/categories.json
  )
}

# mediacms_app_driver ARG…: MediaCMS's ORM/API through scripts/mediacms_suite/driver.py.
mediacms_app_driver() {
  (cd "$WORK/app" && PATH="$WPATH" "$PY" "$MEDIACMS_APP_DIR/driver.py" "$@")
}

# start_short_worker NAME LOG: MediaCMS's Python celery_short (both runs need it). Sets LAST_PID.
start_short_worker() {
  (cd "$WORK/app" && PATH="$WPATH" exec "$PY" -m celery -A cms worker -Q short_tasks -c 1 -l INFO \
    --without-gossip --without-mingle --without-heartbeat -n "short@$1") >"$2" 2>&1 &
  LAST_PID=$!
}

# start_long_worker python|rust NAME LOG [WORKER_BIN [FLAG…]]: the long_tasks consumer, as
# MediaCMS's compose runs its celery_long, or ours with the same settings from the environment
# (and any extra flags). Sets LAST_PID.
start_long_worker() {
  local kind=$1 name=$2 log=$3 bin=${4:-}
  shift $(($# < 4 ? $# : 4))
  if [ "$kind" = python ]; then
    (cd "$WORK/app" && PATH="$WPATH" exec "$PY" -m celery -A cms worker -Q long_tasks -c 1 -Ofair \
      --prefetch-multiplier=1 --loglevel=INFO -n "long@$name") >"$log" 2>&1 &
  else
    REDIS_LOCATION=$SUITE_REDIS_URL POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=5432 \
      POSTGRES_NAME=$SUITE_DB_NAME POSTGRES_USER=postgres POSTGRES_PASSWORD=postgres \
      MEDIA_ROOT=$SUITE_MEDIA_ROOT WORKER_HTTP_ADDR="127.0.0.1:$(free_port)" WORKER_ALLOW_ROOT=true \
      WORKER_HWACCEL=software "$bin" run -Q long_tasks -c 1 -n "long@$name" "$@" >"$log" 2>&1 &
  fi
  LAST_PID=$!
}
