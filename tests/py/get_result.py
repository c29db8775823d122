"""Read a result as a MediaCMS-side caller would: AsyncResult(id).get(). argv[1]: task id.
Prints {"value": …} or {"error_type": <exception class name>, "error": str(exc)}."""
import json
import os
import sys

from celery import Celery

app = Celery("reader", broker=os.environ["BROKER_URL"], backend=os.environ["BROKER_URL"])
try:
    value = app.AsyncResult(sys.argv[1]).get(timeout=5)
    print(json.dumps({"value": value}))
except Exception as exc:  # the point is to report which exception Celery rebuilt
    print(json.dumps({"error_type": type(exc).__name__, "error": str(exc)}))
