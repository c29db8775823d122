"""Variant b of ladder.sh: our worker end to end, as MediaCMS drives it.

One upload's `long_tasks` messages go through real Redis (DB 13) and real Postgres (a scratch
database loaded from MediaCMS's schema and the reference upload rows), published with Celery's
own producer in the order and with the priorities MediaCMS's upload flow uses
(python-reference-run.md: `produce_sprite_from_video`, then `encode_media` per active profile,
minimum resolutions at priority 9). The worker is the release binary, `-c 1` like celery_long.

  full_path.py prepare SRC MEDIA_INFO_JSON WORKDIR    untimed: database, media file, Redis DB
  full_path.py run WORKDIR                            timed: start worker, publish, wait, stop

`run` starts the worker as its own child and waits for it, so GNU time around it counts the
worker's and every ffmpeg's CPU. It stops the worker (SIGTERM, 1 s drain) once the sprite
strip's result is stored and every Encoding has ended: what variant a produces. The
`create_hls` follow-ups are not part of MediaCMS's sequence (variant a has no HLS step) and are
given back unfinished or left queued. It prints one JSON line: seconds from the first publish to
each stored task result and to each rendition's end (files_encoding.update_date), and the first
playable rendition among them.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime

import psycopg
import redis
from celery import Celery

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("MEDIACMS_SHARED", os.path.join(ROOT, "tests", "fixtures"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
PG = {k: os.environ.get(e, d) for k, e, d in [
    ("host", "PGHOST", "127.0.0.1"), ("port", "PGPORT", "5432"), ("user", "PGUSER", "postgres")]}
DB = os.environ.get("BENCH_LADDER_DB", "mediacms_bench_ladder")
BIN = os.path.join(ROOT, "target", "release", "mediacms-worker")

TOKEN = "2SJorQ1Qe"  # media 1 of upload_example.sql, reused for the benchmark source
UID_HEX = "41905ce2087146cdba79c28a24c33a9a"
MEDIA_FILE = "original/user/refuser/%s.bench_source.mp4" % UID_HEX
# (encoding id, profile id, priority) in MediaCMS's publish order: 144 and 240 are
# MINIMUM_RESOLUTIONS_TO_ENCODE (priority 9); 1080 (profile 7) is active and the source is 1080p.
ENCODINGS = [(1, 23, 9), (2, 2, 9), (3, 3, 0), (4, 13, 0), (5, 10, 0), (14, 7, 0), (6, 1, 0)]


def psql(dbname, *args):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG["host"], "-p", PG["port"],
                    "-U", PG["user"], "-d", dbname, *args], check=True, stdout=subprocess.DEVNULL)


def prepare(src, info_path, work):
    info = json.load(open(info_path))
    psql("postgres", "-c", "DROP DATABASE IF EXISTS %s" % DB)
    psql("postgres", "-c", "CREATE DATABASE %s" % DB)
    psql(DB, "-f", os.path.join(SHARED, "mediacms", "schema.sql"))
    psql(DB, "-f", os.path.join(SHARED, "mediacms", "upload_example.sql"))
    media = os.path.join(work, "media")
    shutil.rmtree(media, ignore_errors=True)
    shutil.rmtree(os.path.join(work, "tmp"), ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.join(media, MEDIA_FILE)))
    os.makedirs(os.path.join(work, "tmp"))
    try:
        os.link(src, os.path.join(media, MEDIA_FILE))
    except OSError:
        shutil.copyfile(src, os.path.join(media, MEDIA_FILE))
    info["filename"] = os.path.join(media, MEDIA_FILE)
    with psycopg.connect(dbname=DB, **PG) as c:
        c.execute("UPDATE files_media SET media_file = %s, media_info = %s, duration = %s, "
                  "video_height = %s WHERE friendly_token = %s",
                  (MEDIA_FILE, json.dumps(info), round(info["video_duration"]),
                   info["video_height"], TOKEN))
        # The 1080 row MediaCMS's encode() creates for a 1080p source (a copy of row 5's shape).
        cols = ("add_date, commands, chunk, chunk_file_path, chunks_info, logs, md5sum, "
                "media_file, progress, update_date, retries, size, status, temp_file, task_id, "
                "total_run_time, worker, media_id")
        c.execute("INSERT INTO files_encoding (id, %s, profile_id) SELECT 14, %s, 7 "
                  "FROM files_encoding WHERE id = 5" % (cols, cols))
    redis.Redis.from_url(REDIS_URL).flushdb()


def worker_env(work):
    env = dict(os.environ)
    env.update({
        "BROKER_URL": REDIS_URL, "REDIS_LOCATION": REDIS_URL, "CELERY_RESULT_BACKEND": REDIS_URL,
        "POSTGRES_HOST": PG["host"], "POSTGRES_PORT": PG["port"], "POSTGRES_NAME": DB,
        "POSTGRES_USER": PG["user"], "POSTGRES_PASSWORD": os.environ.get("PGPASSWORD", ""),
        "WORKER_QUEUES": "long_tasks", "WORKER_CONCURRENCY": "1",
        "MEDIA_ROOT": os.path.join(work, "media"), "TEMP_DIRECTORY": os.path.join(work, "tmp"),
        "WORKER_ALLOW_ROOT": "true", "WORKER_HTTP_ADDR": "127.0.0.1:0",
        "WORKER_DRAIN_SECS": "1",
        "WORKER_DECODE_ONCE": os.environ.get("OURS_DECODE_ONCE", "true"),
    })
    return env


def run(work):
    app = Celery("cms", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.update(task_serializer="json", accept_content=["application/json"])
    rdb = redis.Redis.from_url(REDIS_URL)
    log = open(os.path.join(work, "worker.log"), "w")
    worker = subprocess.Popen([BIN, "run"], env=worker_env(work), stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    t0 = time.time()
    ids = {"sprites": app.send_task("produce_sprite_from_video", args=[TOKEN], kwargs={},
                                    queue="long_tasks", priority=0).id}
    for enc, prof, prio in ENCODINGS:
        ids["encode_media-%d" % prof] = app.send_task(
            "encode_media", args=[TOKEN, prof, enc], kwargs={"force": True},
            queue="long_tasks", priority=prio).id
    # Done = what variant a produces: the sprite strip, and every Encoding (six renditions and
    # the gif) ended in the database. The claimed renditions' own messages (trivial skips) and
    # the create_hls follow-ups may still be queued then; they are not part of a's sequence.
    ids_enc = [e for e, _, _ in ENCODINGS]
    pg = psycopg.connect(dbname=DB, autocommit=True, **PG)
    while True:
        if worker.poll() is not None:
            raise SystemExit("worker exited (%s); see %s/worker.log" % (worker.returncode, work))
        open_rows = pg.execute("SELECT count(*) FROM files_encoding WHERE id = ANY(%s) AND "
                               "status NOT IN ('success', 'fail')", (ids_enc,)).fetchone()[0]
        if open_rows == 0 and rdb.exists("celery-task-meta-" + ids["sprites"]):
            break
        time.sleep(0.05)
    wall = time.time() - t0
    worker.send_signal(signal.SIGTERM)
    worker.wait()
    rows = pg.execute(
        "SELECT p.name, e.status, extract(epoch FROM e.update_date) FROM files_encoding e "
        "JOIN files_encodeprofile p ON p.id = e.profile_id WHERE e.id = ANY(%s)",
        (ids_enc,)).fetchall()
    done = {}
    for name, task_id in ids.items():
        raw = rdb.get("celery-task-meta-" + task_id)
        if raw is not None:
            meta = json.loads(raw)
            done[name] = (meta["status"],
                          datetime.fromisoformat(meta["date_done"]).timestamp() - t0)
    renditions = {name: {"status": st, "s": round(float(at) - t0, 2)} for name, st, at in rows}
    playable = [r["s"] for n, r in renditions.items() if n.startswith("h264") and
                r["status"] == "success"]
    failed = [n for n, (st, _) in done.items() if st != "SUCCESS"]
    failed += [n for n, r in renditions.items() if r["status"] != "success"]
    pg.close()
    print(json.dumps({
        "wall_s": round(wall, 2),
        "first_playable_s": min(playable) if playable else None,
        "first_playable_share": round(min(playable) / wall, 3) if playable else None,
        "tasks": {n: round(s, 2) for n, (_, s) in done.items()},
        "renditions": renditions,
        "failed": failed,
    }))
    if failed:
        raise SystemExit("not everything succeeded: %s (see %s/worker.log)" % (failed, work))


def main():
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "run":
        run(sys.argv[2])
    else:
        raise SystemExit("usage: full_path.py prepare SRC MEDIA_INFO WORKDIR | run WORKDIR")


if __name__ == "__main__":
    main()
