"""Publish tasks to an amqp:// broker with Celery 5.4's `send_task`, as MediaCMS does.

Usage: amqp_send.py <amqp url> <queue>. Prints one JSON line: the sent tasks with their ids,
args, priority and countdown, and `sent_at` (unix time before the first send).
"""
import json
import sys
import time

from celery import Celery

url, queue = sys.argv[1], sys.argv[2]
app = Celery("amqp_send", broker=url)
sent_at = time.time()
plan = [
    {"args": ["tok-prio9", 1], "priority": 9, "countdown": None},
    {"args": ["tok-plain", 2], "priority": None, "countdown": None},
    {"args": ["tok-later", 3], "priority": 0, "countdown": 30},
]
out = []
with app.connection_for_write() as conn:
    for p in plan:
        opts = {"queue": queue, "connection": conn}
        if p["priority"] is not None:
            opts["priority"] = p["priority"]
        if p["countdown"] is not None:
            opts["countdown"] = p["countdown"]
        r = app.send_task("encode_media", args=p["args"], kwargs={"force": True}, **opts)
        out.append({**p, "id": r.id})
print(json.dumps({"sent_at": sent_at, "tasks": out}))
