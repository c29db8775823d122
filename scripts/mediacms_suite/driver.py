"""Drive one run of the differential suite from inside MediaCMS (its ORM, its Celery app, its API).

Run with MediaCMS's venv python, cwd = the suite's copy of MediaCMS, SUITE_* in the environment
(see local_settings.py). Subcommands:
  upload DIR        upload every clip in DIR as MediaCMS's upload view does (Media.objects.create)
  wait TIMEOUT      until both queues, `unacked` and every worker's active/reserved lists are empty
  snapshot OUT      what MediaCMS shows for each media (API + ORM + ffprobe of every output), as JSON
"""

import hashlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cms.settings")

import django  # noqa: E402

django.setup()

from django.core.files import File  # noqa: E402
from django.test import Client  # noqa: E402

from files.models import Media  # noqa: E402
from users.models import User  # noqa: E402

QUEUES = ("long_tasks", "short_tasks")


def upload(clip_dir):
    user = User.objects.create_user(username="suite", email="suite@example.com", password="suite-pass")
    for name in sorted(os.listdir(clip_dir)):
        with open(os.path.join(clip_dir, name), "rb") as f:
            # The call MediaCMS's upload view makes; its post_save enqueues the encodes.
            media = Media.objects.create(media_file=File(f, name=name), user=user, title=name)
        print(f"uploaded {name} -> {media.friendly_token}", flush=True)


def queue_keys(r, queue):
    # kombu's priority lists: the plain name (0) and name\x06\x16{3,6,9}.
    return [queue] + [f"{queue}\x06\x16{p}" for p in (3, 6, 9)]


def busy(app, r):
    waiting = sum(r.llen(k) for q in QUEUES for k in queue_keys(r, q))
    unacked = r.hlen("unacked")
    inspect = app.control.inspect(timeout=1.0)
    active = inspect.active() or {}
    reserved = inspect.reserved() or {}
    running = sum(len(v) for v in active.values()) + sum(len(v) for v in reserved.values())
    return waiting, unacked, running, sorted(active)


def wait(timeout):
    import redis

    from cms.celery import app

    r = redis.Redis.from_url(os.environ["SUITE_REDIS_URL"])
    deadline = time.monotonic() + timeout
    idle_checks = 0
    last = None
    while time.monotonic() < deadline:
        state = busy(app, r)
        waiting, unacked, running, workers = state
        if state != last:
            print(f"wait: {waiting} queued, {unacked} unacked, {running} running on {workers}", flush=True)
            last = state
        # Both workers must have answered (an absent worker reads as idle otherwise), and the
        # idle state must hold twice in a row: a task may publish a follow-up as it finishes.
        if waiting == 0 and unacked == 0 and running == 0 and len(workers) >= 2:
            idle_checks += 1
            if idle_checks >= 3:
                return 0
        else:
            idle_checks = 0
        time.sleep(2)
    print(f"wait: still busy after {timeout} s: {last}", flush=True)
    return 1


def md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def probe(path):
    """The ffprobe facts the suite compares: per stream codec, profile, pix_fmt, size, frame
    count (packets read, so GIFs and MP4s count the same way) and duration."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_entries",
         "stream=codec_type,codec_name,profile,pix_fmt,width,height,nb_read_packets,duration"
         ":format=duration", "-of", "json", path],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-200:]}
    doc = json.loads(out.stdout)
    facts = {}
    for s in doc.get("streams", []):
        kind = s.get("codec_type", "?")
        for key in ("codec_name", "profile", "pix_fmt", "width", "height", "nb_read_packets"):
            if key in s:
                facts[f"{kind}.{key}"] = s[key]
        if "duration" in s:
            facts[f"{kind}.duration"] = round(float(s["duration"]), 2)
    if "duration" in doc.get("format", {}):
        facts["format.duration"] = round(float(doc["format"]["duration"]), 2)
    return facts


def file_facts(path):
    if not path or not os.path.isfile(path):
        return {"exists": False}
    return {"exists": True, "size": os.path.getsize(path), "md5": md5(path), "probe": probe(path)}


def media_snapshot(media, client):
    api = client.get(f"/api/v1/media/{media.friendly_token}")
    encodings = []
    for e in media.encodings.select_related("profile").order_by("profile__id", "chunk", "id"):
        path = e.media_file.path if e.media_file else ""
        encodings.append({
            "profile": e.profile.name,
            "status": e.status,
            "chunk": e.chunk,
            "progress": e.progress,
            "name": os.path.basename(path),
            "file": file_facts(path),
        })
    return {
        "title": media.title,
        "uid": media.uid.hex,
        "friendly_token": media.friendly_token,
        "encoding_status": media.encoding_status,
        "state": media.state,
        "listable": media.listable,
        "api_status": api.status_code,
        "api": api.json() if api.status_code == 200 else None,
        "encodings": encodings,
        "sprites": {"name": os.path.basename(media.sprites.path) if media.sprites else "",
                    "file": file_facts(media.sprites.path if media.sprites else "")},
        "preview": {"name": os.path.basename(media.preview_file_path or ""),
                    "file": file_facts(media.preview_file_path)},
        "hls_info": media.hls_info,
    }


def snapshot(out):
    client = Client()
    doc = {m.title: media_snapshot(m, client) for m in Media.objects.order_by("title")}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True, default=str)
    print(f"snapshot: {len(doc)} media -> {out}", flush=True)


def main(argv):
    cmd = argv[1]
    if cmd == "upload":
        upload(argv[2])
        return 0
    if cmd == "wait":
        return wait(float(argv[2]))
    if cmd == "snapshot":
        snapshot(argv[2])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
