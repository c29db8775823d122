"""Capture what real Celery writes for tasks published from inside a running task.

Run from the repository root (see proto/README.md):

    .venv/bin/python proto/generate_family_goldens.py [--redis redis://127.0.0.1:6379/14]

It FLUSHDBs the given Redis database (default db 14). A real worker runs `encode_media` for
TOKEN_FAMILY, which calls `create_hls.delay(token)` twice as MediaCMS's post_encode_actions does;
the two create_hls list entries are read back byte for byte before anything consumes them, then
a second worker runs them. Output, beside generate_goldens.py's files:
  family-parent.json         the encode_media list entry
  family-child-1.json, -2    the create_hls entries it published (in publish order)
  result-family-parent.json  its result (children = the two create_hls)
  result-family-child.json   the first child's result (parent_id = the encode_media)
"""

import os
import signal
import subprocess
import sys
import time

import celery
import kombu
import redis

REDIS_URL = "redis://127.0.0.1:6379/14"
if "--redis" in sys.argv:
    REDIS_URL = sys.argv[sys.argv.index("--redis") + 1]
os.environ["GOLDEN_REDIS"] = REDIS_URL
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from generate_goldens import encode_media, write  # noqa: E402

PARENT_QUEUE = "golden_family"


def worker(queue):
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "generate_goldens:app", "worker", "-Q", queue,
         "-c", "1", "-P", "solo", "--without-heartbeat", "--without-mingle", "--without-gossip",
         "-n", f"golden-{queue}@gen", "--loglevel", "WARNING"],
        cwd=here, env={**os.environ, "GOLDEN_REDIS": REDIS_URL},
    )


def run_until(queue, done, what):
    w = worker(queue)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not done():
            time.sleep(0.2)
    finally:
        w.send_signal(signal.SIGTERM)
        w.wait(30)
    if not done():
        sys.exit(f"no {what} within 60 s")


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden",
                       f"celery-{celery.__version__}_kombu-{kombu.__version__}")
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    # On its own queue, so the worker that runs it does not also consume its children.
    parent = encode_media.apply_async(args=["TOKEN_FAMILY", 23, 1], kwargs={"force": True}, queue=PARENT_QUEUE)
    write(out, "family-parent.json", r.lrange(PARENT_QUEUE, 0, -1)[0])
    run_until(PARENT_QUEUE, lambda: r.exists(f"celery-task-meta-{parent.id}"), "parent result")
    children = r.lrange("long_tasks", 0, -1)[::-1]  # LPUSHed: the first published is last
    if len(children) != 2:
        sys.exit(f"expected 2 create_hls entries, found {len(children)}")
    for n, raw in enumerate(children, 1):
        write(out, f"family-child-{n}.json", raw)
    write(out, "result-family-parent.json", r.get(f"celery-task-meta-{parent.id}"))
    import json
    first = json.loads(children[0])["headers"]["id"]
    run_until("long_tasks", lambda: r.exists(f"celery-task-meta-{first}"), "child result")
    write(out, "result-family-child.json", r.get(f"celery-task-meta-{first}"))
    r.flushdb()
    print(f"wrote the family goldens to {out}")


if __name__ == "__main__":
    main()
