#!/usr/bin/env bash
#! Sourced by scripts/container-suite.sh: the compose cases. MediaCMS 7.3's real compose file merged
#! with our override (and, to run here, docker/test-services/compose.suite.yaml), scaled to three
#! celery_long replicas; then each docker/docker-compose.*-node.yaml joining it as its own project.

MEDIACMS_COMPOSE=docker/mediacms-7.3/docker-compose.yaml
OVERRIDE=docker/docker-compose.mediacms.yaml

stack() {
  mkdir -p "$WORK/stack"
  # A clean environment: only what the case sets, never the host's POSTGRES_*/REDIS_* variables.
  env -i PATH="$PATH" HOME="${HOME:-/root}" DOCKER_BUILDKIT=1 "${COMPOSE[@]}" -p "$SUITE" \
    --project-directory "$WORK/stack" -f "$ROOT/$MEDIACMS_COMPOSE" -f "$ROOT/$OVERRIDE" \
    -f "$ROOT/docker/test-services/compose.suite.yaml" "$@" 2>>"$WORK/compose.log"
}

case_compose_config() {
  local cfg
  mkdir -p "$WORK/stack"
  cfg=$(env -i PATH="$PATH" HOME="${HOME:-/root}" "${COMPOSE[@]}" -p "$SUITE" \
    --project-directory "$WORK/stack" -f "$ROOT/$MEDIACMS_COMPOSE" -f "$ROOT/$OVERRIDE" config)
  python3 - "$cfg" <<'PY'
import sys, yaml
svc = yaml.safe_load(sys.argv[1])["services"]["celery_long"]
assert svc["image"] == "mediacms-worker:latest", svc["image"]
assert svc["entrypoint"] == ["/usr/local/bin/mediacms-worker"], svc["entrypoint"]
mounts = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in svc["volumes"]}
for path in ("/home/mediacms.io/mediacms/media_files", "/home/mediacms.io/mediacms/logs",
             "/home/mediacms.io/mediacms/custom"):
    assert path in mounts, (path, mounts)
assert svc["environment"]["REDIS_LOCATION"] == "redis://redis:6379/1", svc["environment"]
assert svc["environment"]["POSTGRES_HOST"] == "db"
print(f"celery_long: {svc['image']}, {len(mounts)} MediaCMS volumes, command {' '.join(svc['command'][:5])} …")
PY
}

stack_ctr() { local ids; ids=$(stack ps -q "$1"); echo "${ids%%$'\n'*}"; }
replicas() { stack ps -q celery_long; }

# Three uploads: media 1 of the reference upload plus two copies (uploads.py), 21 messages.
stack_uploads() {
  local db=$1 media_vol=$2 paths
  "$DOCKER" exec -i "$db" psql -v ON_ERROR_STOP=1 -q -U mediacms -d mediacms <"$FIXTURES/schema.sql" >/dev/null
  "$DOCKER" exec -i "$db" psql -v ON_ERROR_STOP=1 -q -U mediacms -d mediacms <"$FIXTURES/upload_example.sql" >/dev/null
  mkdir -p "$WORK/uploads/in"
  python3 scripts/container-suite/uploads.py "$FIXTURES" "$WORK/uploads/msgs" 201 2 \
    >"$WORK/uploads/copies.sql" 2>"$WORK/uploads/paths"
  "$DOCKER" exec -i "$db" psql -v ON_ERROR_STOP=1 -q -U mediacms -d mediacms <"$WORK/uploads/copies.sql" >/dev/null
  make_original "$WORK/uploads/in/$ORIGINAL_REL"
  # shellcheck disable=SC2046
  volume_put "$media_vol" "$ORIGINAL_REL" $(cat "$WORK/uploads/paths")
}

# volume_put VOLUME DEST…: the generated original into a named volume at each DEST (relative to
# MEDIA_ROOT), owned by www-data as the web container's uploads are.
volume_put() {
  local vol=$1 dest
  shift
  [ -f "$WORK/uploads/in/$ORIGINAL_REL" ] || make_original "$WORK/uploads/in/$ORIGINAL_REL"
  for dest in "$@"; do
    "$DOCKER" run --rm --user 0 --entrypoint sh -v "$vol:$MEDIA_IN_CTR" \
      -v "$WORK/uploads/in:/in:ro" "$IMAGE" -c \
      "install -D -o 33 -g 33 -m 0644 /in/$ORIGINAL_REL $MEDIA_IN_CTR/$dest && chown -R 33:33 $MEDIA_IN_CTR"
  done
}

all_media_done() {
  local db=$1
  [ "$(sql "$db" mediacms "SELECT count(*) FROM files_encoding WHERE status <> 'success' AND media_id IN (SELECT id FROM files_media WHERE friendly_token = '2SJorQ1Qe' OR friendly_token LIKE 'suite%')")" = 0 ] \
    && [ "$(sql "$db" mediacms "SELECT count(*) FROM files_media WHERE (friendly_token = '2SJorQ1Qe' OR friendly_token LIKE 'suite%') AND (hls_file = '' OR sprites = '')")" = 0 ]
}

# "Task NAME[ID] received" lines of the given containers → "count id" per task id.
received_ids() {
  for c in "$@"; do "$DOCKER" logs "$c" 2>&1; done \
    | sed -n 's/.*Task [a-z_]*\[\([0-9a-f-]*\)\] received.*/\1/p' | sort | uniq -c
}

case_compose_scale() {
  local db redis port media_vol ids dup per names ping
  stack up -d redis db >/dev/null
  db=$(stack_ctr db) redis=$(stack_ctr redis)
  wait_for 60 "$DOCKER" exec "$db" pg_isready -q -d mediacms -U mediacms
  media_vol=${SUITE}_media_files
  "$DOCKER" volume create "$media_vol" >/dev/null
  stack_uploads "$db" "$media_vol"
  stack up -d --no-deps --scale celery_long=3 celery_long >/dev/null
  [ "$(replicas | wc -l)" = 3 ] || die "$(replicas | wc -l) replicas up"
  # shellcheck disable=SC2046
  publish "$redis" 1 $(media1_messages) "$WORK"/uploads/msgs/*.json
  wait_for 300 all_media_done "$db" \
    || die "not done: $(sql "$db" mediacms "SELECT media_id, id, status FROM files_encoding WHERE status <> 'success' ORDER BY 1, 2" | head)"
  wait_for 60 sh -c "[ \"\$($DOCKER exec $redis redis-cli -n 1 LLEN long_tasks)\" = 0 ]"
  # shellcheck disable=SC2046
  ids=$(received_ids $(replicas))
  dup=$(awk '$1 != 1' <<<"$ids")
  [ -z "$dup" ] || die "tasks run more than once: $dup"
  [ "$(wc -l <<<"$ids")" -ge 21 ] || die "only $(wc -l <<<"$ids") tasks ran"
  per=$(for c in $(replicas); do received_ids "$c" | wc -l; done | paste -sd/)
  # celery inspect ping from the host's Python Celery (the repo's .venv) over the published port.
  [ -x .venv/bin/celery ] || die "no .venv/bin/celery: run scripts/test-setup.sh (make test does)"
  port=$(stack port redis 6379 | awk -F: '{print $NF}')
  ping=$(.venv/bin/celery -b "redis://127.0.0.1:$port/1" inspect ping --timeout 5 2>&1) \
    || die "celery inspect ping failed: $ping"
  names=$(sed -n 's/^-> *\([^:]*\): OK.*/\1/p' <<<"$ping" | sort -u)
  [ "$(wc -l <<<"$names")" = 3 ] || die "inspect ping answered: $names"
  echo "3 replicas, $(wc -l <<<"$ids") tasks each run once (per replica $per), 18 Encodings success; ping: $(paste -sd' ' <<<"$names")"
}

# A node compose file (GPU, VAAPI, …) joining the stack as its own project: the stack's network
# and media volume (standing in for NFS), no device reservations (no GPU here), no host port.
node_compose() {
  local src=$1 out=$2
  python3 - "$src" "$out" "${SUITE}_default" "${SUITE}_media_files" <<'PY'
import sys, yaml
src, out, net, vol = sys.argv[1:]
doc = yaml.safe_load(open(src))
for svc in doc["services"].values():
    svc.pop("deploy", None); svc.pop("devices", None); svc.pop("group_add", None)
    svc.pop("ports", None); svc.pop("restart", None)
    svc["networks"] = ["stack"]
doc["volumes"] = {"media_files": {"external": True, "name": vol}}
doc["networks"] = {"stack": {"external": True, "name": net}}
yaml.safe_dump(doc, open(out, "w"), sort_keys=False)
PY
}

case_node() {
  local file=$1 media=$2 proj out image svc ctr db redis probe reason ids note
  proj=${SUITE}$(basename "$file" .yaml | tr -cd 'a-z0-9')
  out=$WORK/$(basename "$file")
  node_compose "$file" "$out"
  # The image as compose resolves it (`${WORKER_IMAGE:-default}` → the default here).
  image=$(python3 -c 'import os,re,sys,yaml; i=next(iter(yaml.safe_load(open(sys.argv[1]))["services"].values()))["image"]; print(re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m[1], m[2]), i))' "$out")
  # A node image the suite does not build (e.g. one with VA-API drivers) is stood in for by the
  # CPU image: what is under test here is the compose file's wiring and the software fallback.
  note=""
  if ! "$DOCKER" image inspect "$image" >/dev/null 2>&1; then
    note=" ($image not built here: ran $IMAGE)"
    sed -i "s|image: $image\$|image: $IMAGE|" "$out"
    image=$IMAGE
  fi
  # The stack's own replicas stop, so the node's work is visible.
  stack stop celery_long >/dev/null
  db=$(stack_ctr db) redis=$(stack_ctr redis)
  nodec() {
    env -i PATH="$PATH" HOME="${HOME:-/root}" REDIS_LOCATION=redis://redis:6379/1 POSTGRES_HOST=db \
      POSTGRES_PASSWORD=mediacms WORKER_DRAIN_SECS=5 "${COMPOSE[@]}" -p "$proj" \
      --project-directory "$WORK" -f "$out" "$@" 2>>"$WORK/compose.log"
  }
  nodec up -d >/dev/null
  svc=$(python3 -c 'import sys,yaml; print(next(iter(yaml.safe_load(open(sys.argv[1]))["services"])))' "$out")
  ctr=$(nodec ps -q "$svc")
  [ -n "$ctr" ] || die "node did not start"
  # One more upload for the node: another copy of media 1, as media $media.
  python3 scripts/container-suite/uploads.py "$FIXTURES" "$WORK/node-$proj" "$media" 1 \
    >"$WORK/node-$proj.sql" 2>"$WORK/node-$proj.paths"
  "$DOCKER" exec -i "$db" psql -v ON_ERROR_STOP=1 -q -U mediacms -d mediacms <"$WORK/node-$proj.sql" >/dev/null
  volume_put "${SUITE}_media_files" "$(cat "$WORK/node-$proj.paths")"
  publish "$redis" 1 "$WORK/node-$proj"/*.json
  wait_for 240 node_done "$db" "$media" || die "node did not finish: $(nodec logs --tail 20 2>&1)"
  ids=$(received_ids "$ctr" | wc -l)
  [ "$ids" -ge 7 ] || die "node ran $ids tasks"
  reason=$("$DOCKER" logs "$ctr" 2>&1 | grep -m1 -o 'device *NO: [^(]*' || true)
  [ -n "$reason" ] || die "no fallback reason in the node's log"
  probe=$("$DOCKER" exec "$ctr" mediacms-worker probe | grep -m1 'device *NO' || true)
  [ -n "$probe" ] || die "probe gave no reason"
  nodec down -v -t 20 >/dev/null
  stack start celery_long >/dev/null
  echo "$image ran $ids tasks on software$note; log: '${reason% }'; probe: '$(echo $probe)'"
}

node_done() {
  [ "$(sql "$1" mediacms "SELECT count(*) FROM files_encoding e JOIN files_media m ON m.id = e.media_id WHERE m.id = $2 AND e.status <> 'success'")" = 0 ] \
    && [ "$(sql "$1" mediacms "SELECT (hls_file <> '' AND sprites <> '')::int FROM files_media WHERE id = $2")" = 1 ]
}
