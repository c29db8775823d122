"""Capture golden Celery wire messages and result documents from REAL Celery.

Run from the repository root (see proto/README.md):

    .venv/bin/python proto/generate_goldens.py [--redis redis://127.0.0.1:6379/15]

It FLUSHDBs the given Redis database (default db 15), publishes tasks exactly as MediaCMS
does (same names, queues, soft time limits, Europe/London timezone, JSON only), reads the raw
list entries back with LRANGE, then runs a real worker to capture a retry message and the
SUCCESS/FAILURE/RETRY/REVOKED result documents. Output: proto/golden/celery-<v>_kombu-<v>/.
Each message file is one Redis list entry byte for byte; manifest.json holds what Python itself
says each message means (the oracle the Rust tests compare against).
"""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import celery
import kombu
import redis
from celery import Celery

REDIS_URL = os.environ.get("GOLDEN_REDIS", "redis://127.0.0.1:6379/15")
if "--redis" in sys.argv:
    REDIS_URL = sys.argv[sys.argv.index("--redis") + 1]

app = Celery("golden")
# MediaCMS's settings (cms/settings.py), old upper-case names as MediaCMS uses them.
app.conf.update(
    broker_url=REDIS_URL,
    result_backend=REDIS_URL,
    accept_content=["application/json"],
    task_serializer="json",
    result_serializer="json",
    timezone="Europe/London",
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 86400},
)
SOFT = 2 * 60 * 60


@app.task(name="encode_media", bind=True, queue="long_tasks", soft_time_limit=SOFT)
def encode_media(self, friendly_token, profile_id, encoding_id, force=True, chunk=False, chunk_file_path=""):
    if friendly_token == "TOKEN_RETRY" and self.request.retries == 0:
        raise self.retry(exc=ValueError("ffmpeg failed"), countdown=3600, max_retries=1)
    if friendly_token == "TOKEN_FAMILY":
        # What MediaCMS's post_encode_actions does from inside encode_media (generate_family_goldens.py).
        create_hls.delay(friendly_token)
        create_hls.delay(friendly_token)
    return True


@app.task(name="create_hls", queue="long_tasks")
def create_hls(friendly_token):
    return True


@app.task(name="produce_sprite_from_video", queue="long_tasks")
def produce_sprite_from_video(friendly_token):
    return {"ok": True, "token": friendly_token}


@app.task(name="whisper_transcribe", queue="long_tasks", soft_time_limit=SOFT)
def whisper_transcribe(friendly_token, translate_to_english=False):
    return True


@app.task(name="get_list_of_popular_media", queue="long_tasks")
def get_list_of_popular_media():
    return True


@app.task(name="update_listings_thumbnails", queue="long_tasks")
def update_listings_thumbnails():
    raise ValueError("ffmpeg failed")


@app.task(name="remove_media_file", queue="long_tasks")
def remove_media_file(media_file=None):
    return True


@app.task(name="chunkize_media", bind=True, queue="short_tasks", soft_time_limit=60 * 30 * 4)
def chunkize_media(self, friendly_token, profiles, force=True):
    return True


PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))
MINUS_0700 = dt.timezone(dt.timedelta(hours=-7))
CHUNK = "/home/mediacms.io/mediacms/media_files/original/user/refuser/00_EdwGGQKxk_x.mp4.mkv"


def legacy_encode_media(**options):
    """MediaCMS <= 8.0.7 passed a 4th positional `encoding_url`; our stand-in task has today's
    signature, so argument checking is switched off for this one call (headers are unaffected)."""
    encode_media.typing = False
    try:
        return encode_media.apply_async(**options)
    finally:
        encode_media.typing = True


def publish_cases():
    """(golden name, callable returning AsyncResult). Covers every shape MediaCMS produces."""
    return [
        ("encode_media-p0", lambda: encode_media.apply_async(args=["TOKEN_P0", 23, 1], kwargs={"force": True}, priority=0)),
        ("encode_media-p3", lambda: encode_media.apply_async(args=["TOKEN_P3", 2, 2], kwargs={"force": True}, priority=3)),
        ("encode_media-p6", lambda: encode_media.apply_async(args=["TOKEN_P6", 3, 3], kwargs={"force": False}, priority=6)),
        ("encode_media-p9", lambda: encode_media.apply_async(args=["TOKEN_P9", 13, 4], kwargs={"force": True}, priority=9)),
        ("encode_media-delay", lambda: encode_media.delay("TOKEN_DELAY", 3, 101, force=True)),
        ("encode_media-chunk", lambda: encode_media.apply_async(
            args=["TOKEN_CHUNK", 23, 8], kwargs={"force": True, "chunk": True, "chunk_file_path": CHUNK}, priority=9)),
        ("encode_media-legacy-url", lambda: legacy_encode_media(
            args=["TOKEN_LEGACY", 10, 5, "https://media.example.org/api/v1/media/encoding/5"], kwargs={"force": True}, priority=0)),
        ("encode_media-countdown", lambda: encode_media.apply_async(args=["TOKEN_CD", 23, 9], kwargs={"force": True}, countdown=5)),
        ("encode_media-eta-offset-expires", lambda: encode_media.apply_async(
            args=["TOKEN_ETA", 7, 105], kwargs={"force": True},
            eta=dt.datetime(2026, 7, 1, 17, 30, 10, 250000, tzinfo=PLUS_0530), expires=3600)),
        ("encode_media-eta-negative-offset", lambda: encode_media.apply_async(
            args=["TOKEN_ETA_NEG", 7, 106], eta=dt.datetime(2026, 12, 1, 5, 0, 0, tzinfo=MINUS_0700),
            expires=dt.datetime(2026, 12, 1, 13, 0, 0, tzinfo=dt.timezone.utc), priority=6)),
        ("encode_media-eta-naive", lambda: encode_media.apply_async(
            args=["TOKEN_NAIVE", 7, 107], eta=dt.datetime(2026, 7, 1, 12, 0, 0))),
        ("encode_media-unicode", lambda: encode_media.apply_async(args=["t\u00f6k'en\"\u2603", 1, 2], kwargs={"force": True})),
        ("whisper_transcribe-countdown", lambda: whisper_transcribe.apply_async(args=["TOKEN_W", False], countdown=10)),
        ("whisper_transcribe-kwarg", lambda: whisper_transcribe.delay("TOKEN_W2", translate_to_english=True)),
        ("create_hls-delay", lambda: create_hls.delay("TOKEN_HLS")),
        ("create_hls-send_task", lambda: app.send_task("create_hls", args=["TOKEN_SEND"], queue="long_tasks")),
        ("produce_sprite_from_video-delay", lambda: produce_sprite_from_video.delay("TOKEN_SPRITE")),
        ("get_list_of_popular_media-delay", lambda: get_list_of_popular_media.delay()),
        ("update_listings_thumbnails-delay", lambda: update_listings_thumbnails.delay()),
        ("remove_media_file-kwarg", lambda: remove_media_file.delay(media_file="/home/mediacms.io/mediacms/media_files/x.mp4")),
        ("remove_media_file-none", lambda: remove_media_file.delay()),
        ("chunkize_media-delay", lambda: chunkize_media.delay("TOKEN_CHUNKIZE", [23, 2, 3, 13, 10, 7], force=True)),
    ]


def raw_entries(r):
    """Every list entry in the db, keyed by task id, with the list it sits in."""
    found = {}
    for key in r.keys("*"):
        if r.type(key) != b"list":
            continue
        for raw in r.lrange(key, 0, -1):
            found[json.loads(raw)["headers"]["id"]] = (key, raw)
    return found


def utc_iso(value):
    """What the Python worker makes of an eta/expires header (naive = app timezone)."""
    if value is None:
        return None
    t = dt.datetime.fromisoformat(value)
    if t.tzinfo is None:
        from zoneinfo import ZoneInfo
        t = t.replace(tzinfo=ZoneInfo("Europe/London"))
    return t.astimezone(dt.timezone.utc).isoformat()


def expected(key, raw):
    """The manifest entry: Python's own reading of the message."""
    msg = json.loads(raw)
    import base64
    args, kwargs, embed = json.loads(base64.b64decode(msg["body"]))
    h, p = msg["headers"], msg["properties"]
    return {
        "list_key_hex": key.hex(), "task": h["task"], "id": h["id"], "args": args, "kwargs": kwargs,
        "embed": embed, "priority": p["priority"], "routing_key": p["delivery_info"]["routing_key"],
        "delivery_tag": p["delivery_tag"], "retries": h["retries"], "timelimit": h["timelimit"],
        "root_id": h["root_id"], "parent_id": h["parent_id"], "eta_utc": utc_iso(h["eta"]),
        "expires_utc": utc_iso(h["expires"]), "origin": h["origin"], "reply_to": p["reply_to"],
    }


def run_worker_phase(r, out):
    """A real worker: a retry message, and SUCCESS/FAILURE/RETRY/REVOKED/NotRegistered results."""
    r.flushdb()
    ids = {
        "success": produce_sprite_from_video.delay("TOKEN_OK").id,
        "failure": update_listings_thumbnails.delay().id,
        "retry": encode_media.apply_async(args=["TOKEN_RETRY", 23, 1], kwargs={"force": True}, priority=3).id,
        "revoked-expired": create_hls.apply_async(
            args=["TOKEN_EXPIRED"], expires=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)).id,
        "not-registered": app.send_task("no_such_task", args=[], queue="long_tasks").id,
    }
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "generate_goldens:app", "worker", "-Q", "long_tasks",
         "-c", "1", "-P", "solo", "--without-heartbeat", "--without-mingle", "--without-gossip",
         "-n", "golden@gen", "--loglevel", "WARNING"],
        cwd=here, env={**os.environ, "GOLDEN_REDIS": REDIS_URL},
    )
    retry_raw = None
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            done = all(r.exists(f"celery-task-meta-{i}") for i in ids.values())
            for held in r.hvals("unacked"):
                message = json.loads(held)[0]
                if message["headers"]["retries"] == 1:
                    # kombu stores json.dumps([message, ex, rk]); dumping the message again gives
                    # the exact bytes it was published with.
                    retry_raw = json.dumps(message).encode()
            if done and retry_raw:
                break
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGQUIT)  # cold stop: do not restore the held retry message
        worker.wait(30)
    if retry_raw is None:
        sys.exit("worker phase: no retry message captured")
    write(out, "encode_media-retry.json", retry_raw)
    for name, task_id in ids.items():
        write(out, f"result-{name}.json", r.get(f"celery-task-meta-{task_id}"))
    # REVOKED by revoke()/terminate, through the backend API the worker itself uses.
    for n, reason in enumerate(("revoked", "terminated")):
        task_id = f"00000000-0000-4000-8000-00000000000{n}"
        app.backend.mark_as_revoked(task_id, reason)
        write(out, f"result-revoked-{reason}.json", r.get(f"celery-task-meta-{task_id}"))
    return {"retry_of": ids["retry"], "results": ids}


def write(out, name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def main():
    versions = f"celery-{celery.__version__}_kombu-{kombu.__version__}"
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", versions)
    os.makedirs(out, exist_ok=True)
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    sent = [(name, call().id) for name, call in publish_cases()]
    entries = raw_entries(r)
    manifest = {"versions": {"celery": celery.__version__, "kombu": kombu.__version__,
                             "redis-py": redis.__version__}, "messages": {}}
    for name, task_id in sent:
        key, raw = entries[task_id]
        write(out, f"{name}.json", raw)
        manifest["messages"][f"{name}.json"] = expected(key, raw)
    worker = run_worker_phase(r, out)
    with open(os.path.join(out, "encode_media-retry.json"), "rb") as f:
        retry = f.read()
        step = max(s for s in (0, 3, 6, 9) if s <= json.loads(retry)["properties"]["priority"])
        key = b"long_tasks" + (b"\x06\x16%d" % step if step else b"")
        manifest["messages"]["encode_media-retry.json"] = expected(key, retry)
    manifest["worker_phase"] = worker
    r.flushdb()
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(os.listdir(out))} files to {out}")


if __name__ == "__main__":
    main()
