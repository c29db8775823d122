#!/usr/bin/env bash
#! Sourced by scripts/container-suite.sh: the single-container cases (image, PID 1 encode,
#! docker stop / docker kill mid-encode, Dockerfile.nvidia). Each prints its evidence last.

case_nvidia_build() {
  "$DOCKER" build -q -t mediacms-worker:nvidia -f "$CTX/docker/Dockerfile.nvidia" "$CTX" >/dev/null
  local env
  env=$("$DOCKER" image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' mediacms-worker:nvidia)
  grep -q '^NVIDIA_DRIVER_CAPABILITIES=.*video' <<<"$env" || die "no NVIDIA_DRIVER_CAPABILITIES video: $env"
  echo "mediacms-worker:nvidia built ($(grep '^NVIDIA_DRIVER' <<<"$env"))"
}

case_image() {
  local user uid probe ctr status
  user=$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")
  uid=$("$DOCKER" run --rm --entrypoint id "$IMAGE" -u)
  [ "$user" = 33:33 ] && [ "$uid" = 33 ] || die "image user '$user', id -u '$uid'"
  # probe as PID 1 (exec-form entrypoint, no --init): its test encodes spawn ffmpeg.
  probe=$("$DOCKER" run --rm "$IMAGE" probe --hwaccel software)
  probe=${probe%%$'\n'*}
  grep -q 'ffmpeg version' <<<"$probe" && ! grep -q unusable <<<"$probe" || die "probe: $probe"
  # The image's own HEALTHCHECK command, polled every 2 s instead of 30 s.
  ctr=$SUITE-health
  # shellcheck disable=SC2046
  "$DOCKER" run -d --name "$ctr" --network "$SUITE-net" --health-interval 2s \
    --health-start-period 2s $(worker_env 1 mediacms) "$IMAGE" >/dev/null
  for _ in $(seq 1 60); do
    status=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$ctr")
    [ "$status" = healthy ] && break
    sleep 1
  done
  [ "$status" = healthy ] || die "health '$status'; log: $("$DOCKER" logs --tail 20 "$ctr" 2>&1)"
  "$DOCKER" rm -fv "$ctr" >/dev/null
  echo "user $user, probe '${probe:0:40}…', HEALTHCHECK $status"
}

# Media dir on the host, bind-mounted at MediaCMS's path, owned by www-data like a fresh volume.
media_dir() {
  local dir=$WORK/$1 secs=${2:-8}
  make_original "$dir/$ORIGINAL_REL" "$secs"
  chown -R 33:33 "$dir"
  echo "$dir"
}

case_pid1_encode() {
  local media ctr=$SUITE-pid1 db=case_pid1 pid1 bad files
  media=$(media_dir pid1)
  load_reference_db "$SUITE-db" "$db"
  # shellcheck disable=SC2046
  publish "$SUITE-redis" 2 $(media1_messages)
  # shellcheck disable=SC2046
  "$DOCKER" run -d --name "$ctr" --network "$SUITE-net" -v "$media:$MEDIA_IN_CTR" \
    $(worker_env 2 "$db") "$IMAGE" >/dev/null
  pid1=$("$DOCKER" exec "$ctr" cat /proc/1/cmdline | tr '\0' ' ')
  [[ "$pid1" == /usr/local/bin/mediacms-worker* ]] || die "PID 1 is '$pid1'"
  wait_for 240 media1_done "$SUITE-db" "$db" \
    || die "not done: $(sql "$SUITE-db" "$db" "SELECT id, status, left(logs, 200) FROM files_encoding WHERE media_id = 1")
$("$DOCKER" logs --tail 20 "$ctr" 2>&1)"
  bad=$(bad_file_modes "$media")
  [ -z "$bad" ] || die "files not 33:33 and world-readable: $bad"
  files=$(find "$media/encoded" "$media/hls" -type f | wc -l)
  "$DOCKER" rm -fv "$ctr" >/dev/null
  echo "PID 1 = mediacms-worker; 6 Encodings success, HLS + sprites; $files files, all 33:33 o+r"
}

# Starts a worker on media 1's h264-720 Encoding (enc 5) from a 40 s original and waits until its
# encode runs. Sets MID_MEDIA, MID_DB, MID_DBN. These cases stop or kill one Encoding's own
# ffmpeg and count its one file: one by one (the decode-once default would claim the media's
# other pending rows too; the compose and PID 1 cases run the default).
start_mid_encode() {
  local name=$1 dbn=$2 ctr=$3
  shift 3
  MID_MEDIA=$(media_dir "$name" 40) MID_DB=case_$name MID_DBN=$dbn
  load_reference_db "$SUITE-db" "$MID_DB"
  publish "$SUITE-redis" "$dbn" "$FIXTURES/messages/encode_media-5.json"
  # shellcheck disable=SC2046
  "$DOCKER" run -d --name "$ctr" --network "$SUITE-net" -v "$MID_MEDIA:$MEDIA_IN_CTR" \
    $(worker_env "$dbn" "$MID_DB") -e WORKER_DECODE_ONCE=false "$@" "$IMAGE" >/dev/null
  # Mid-encode: the Encoding row says running and its ffmpeg is a child of the worker (not one of
  # the start-up probe's).
  wait_for 90 encoding_running "$ctr" || die "encode did not start in $ctr"
}

encoding_running() {
  [ "$(enc5_status "$MID_DB")" = running ] && grep -q 'ffmpeg.*libx264' <<<"$("$DOCKER" top "$1" -o pid,args)"
}

redis_n() { "$DOCKER" exec "$SUITE-redis" redis-cli -n "$1" "${@:2}"; }
enc5_status() { sql "$SUITE-db" "$1" "SELECT status FROM files_encoding WHERE id = 5"; }
enc5_success() { [ "$(enc5_status "$1")" = success ]; }
queue_idle() { [ "$(redis_n "$1" LLEN long_tasks)" = 0 ] && [ "$(redis_n "$1" HLEN unacked)" = 0 ]; }

case_stop() {
  local ctr=$SUITE-stop t0 took code queued unacked status
  start_mid_encode stop 3 "$ctr" -e WORKER_DRAIN_SECS=3
  t0=$SECONDS
  "$DOCKER" stop -t 30 "$ctr" >/dev/null
  took=$((SECONDS - t0))
  code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$ctr")
  queued=$(redis_n 3 LLEN long_tasks) unacked=$(redis_n 3 HLEN unacked)
  status=$(enc5_status "$MID_DB")
  [ "$code" = 0 ] && [ "$took" -lt 30 ] || die "exit $code after $took s: $("$DOCKER" logs --tail 15 "$ctr" 2>&1)"
  [ "$unacked" = 0 ] || die "$unacked deliveries left unacked"
  if [ "$status" = success ]; then
    [ "$queued" = 0 ] || die "encoded and still queued"
    echo "SIGTERM: drained, acked (Encoding success), exit 0 in $took s"
  else
    [ "$queued" = 1 ] || die "Encoding $status but $queued queued: lost"
    echo "SIGTERM: requeued (LLEN 1, unacked 0, Encoding $status), exit 0 in $took s (grace 30 s)"
  fi
  "$DOCKER" rm -fv "$ctr" >/dev/null
}

case_kill() {
  local a=$SUITE-kill-a b=$SUITE-kill-b t0 files blog
  start_mid_encode kill 4 "$a" -e WORKER_LEASE_SECS=10
  "$DOCKER" kill "$a" >/dev/null
  t0=$SECONDS
  # shellcheck disable=SC2046
  "$DOCKER" run -d --name "$b" --network "$SUITE-net" -v "$MID_MEDIA:$MEDIA_IN_CTR" \
    $(worker_env 4 "$MID_DB") -e WORKER_LEASE_SECS=10 -e WORKER_DECODE_ONCE=false "$IMAGE" >/dev/null
  wait_for 240 enc5_success "$MID_DB" \
    || die "Encoding $(enc5_status "$MID_DB"); B log: $("$DOCKER" logs --tail 20 "$b" 2>&1)"
  wait_for 60 queue_idle 4 || die "queue/unacked not empty after re-run"
  files=$(find "$MID_MEDIA/encoded" -type f | wc -l)
  [ "$files" = 1 ] || die "$files files under encoded/: $(find "$MID_MEDIA/encoded" -type f)"
  # Captured first: under pipefail, `grep -q` closing the pipe early would fail the pipeline.
  blog=$("$DOCKER" logs "$b" 2>&1)
  grep -q 'Task encode_media\[.*received' <<<"$blog" || die "replica B did not run the task: $blog"
  "$DOCKER" rm -fv "$a" "$b" >/dev/null
  echo "SIGKILL: replica B re-ran it $((SECONDS - t0)) s later; Encoding success, 1 file, queue and unacked empty"
}
