"""Celery 5.4 stand-in for MediaCMS's celery_long, for the dispatch benchmark only.

Its one task is named `encode_media` and does what MediaCMS's does for an Encoding row that no
longer exists (contract §2.1 step 1): one read of files_encoding, then `return False`. So the
same messages measure both workers: Celery + prefork + the SQL read + the result write.

Settings follow MediaCMS (contract §7.1): JSON, Redis broker and result backend on one URL,
prefetch 1, early ack. The DB connection is opened per task by default, like Django with
CONN_MAX_AGE=0 under Celery's Django fixup (it closes the connection after each task);
BENCH_PERSISTENT_CONN=1 keeps one connection per process instead.
"""

import os

import psycopg
from celery import Celery

URL = os.environ["BENCH_REDIS_URL"]
DSN = os.environ["BENCH_PG_DSN"]
PERSISTENT = os.environ.get("BENCH_PERSISTENT_CONN") == "1"

app = Celery("cms", broker=URL, backend=URL)
app.conf.update(
    accept_content=["application/json"],
    task_serializer="json",
    result_serializer="json",
    timezone="Europe/London",
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 86400},
    broker_connection_retry_on_startup=True,
)

_conn = None


def _connection():
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(DSN, autocommit=True)
    return _conn


@app.task(name="encode_media", bind=True, soft_time_limit=7200)
def encode_media(self, friendly_token, profile_id, encoding_id, force=True, chunk=False, chunk_file_path=""):
    conn = _connection()
    try:
        conn.execute("SELECT 1 FROM files_encoding WHERE id = %s", (encoding_id,)).fetchone()
    finally:
        if not PERSISTENT:
            conn.close()
    # The benchmark's ids never exist: MediaCMS returns False here (task SUCCESS, result false).
    return False
