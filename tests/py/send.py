"""Publish tasks the way MediaCMS does (Celery 5.4 send_task). argv[1]: JSON list of
{name, args, kwargs, queue, priority, countdown}. Prints the task ids as a JSON list."""
import json
import os
import sys

from celery import Celery

app = Celery("sender", broker=os.environ["BROKER_URL"], backend=os.environ["BROKER_URL"])
ids = []
for t in json.loads(sys.argv[1]):
    r = app.send_task(
        t["name"], args=t.get("args", []), kwargs=t.get("kwargs", {}), queue=t["queue"],
        priority=t.get("priority"), countdown=t.get("countdown"),
    )
    ids.append(r.id)
print(json.dumps(ids))
