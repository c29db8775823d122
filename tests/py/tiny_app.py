"""A tiny Celery 5.4 app with MediaCMS's long task names, configured like MediaCMS (Redis broker
and result backend from $BROKER_URL, JSON only). Its tasks report what the worker received."""
import os

from celery import Celery

app = Celery("tiny_app")
app.conf.update(
    broker_url=os.environ["BROKER_URL"],
    result_backend=os.environ["BROKER_URL"],
    accept_content=["application/json"],
    task_serializer="json",
    result_serializer="json",
    timezone="Europe/London",
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 86400},
)


def _report(task, *args, **kwargs):
    return {
        "task": task.name,
        "args": list(args),
        "kwargs": kwargs,
        "retries": task.request.retries,
        "eta": task.request.eta,
        "queue": task.request.delivery_info.get("routing_key"),
    }


@app.task(name="create_hls", bind=True, queue="long_tasks")
def create_hls(self, friendly_token):
    return _report(self, friendly_token)


@app.task(name="encode_media", bind=True, queue="long_tasks")
def encode_media(self, friendly_token, profile_id, encoding_id, force=True, chunk=False, chunk_file_path=""):
    return _report(self, friendly_token, profile_id, encoding_id, force=force, chunk=chunk)
