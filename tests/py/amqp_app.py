"""Tiny Celery 5.4 app on an amqp:// broker for tests/amqp_broker.rs.

Worker: `python -m celery -A amqp_app worker -Q <queue> -c 1 --pool solo` with AMQP_URL and
SIDE_DIR set; each `create_hls` run writes SIDE_DIR/<task id>.json describing what it received.
"""
import json
import os
import time

from celery import Celery

app = Celery("amqp_app", broker=os.environ["AMQP_URL"])
app.conf.update(
    accept_content=["application/json"],
    task_serializer="json",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="create_hls", bind=True)
def create_hls(self, friendly_token):
    req = self.request
    record = {
        "args": list(req.args),
        "kwargs": req.kwargs,
        "retries": req.retries,
        "eta": req.eta,
        "priority": (req.delivery_info or {}).get("priority"),
        "routing_key": (req.delivery_info or {}).get("routing_key"),
        "started": time.time(),
    }
    path = os.path.join(os.environ["SIDE_DIR"], f"{req.id}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.rename(path + ".tmp", path)
    return True
