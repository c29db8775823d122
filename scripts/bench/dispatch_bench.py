"""Producer and measurer of the dispatch benchmark (run by dispatch.sh, which starts the worker).

Sends MediaCMS-shaped `encode_media` messages (args [token, profile, missing encoding id],
kwargs {"force": true}) with Celery's own producer and reads the results back from Redis:
`date_done` in `celery-task-meta-<id>` is the worker's clock at the result write, so no worker
needs instrumenting.

  dispatch_bench.py seed QUEUE                 one message, before the worker starts; prints its id
  dispatch_bench.py ready ID T0 PID            waits for ID's result; prints seconds from T0 (epoch)
  dispatch_bench.py latency QUEUE M GAP_MS     M messages one at a time; send->result seconds
  dispatch_bench.py prefill QUEUE N IDS        N messages queued (ids to file IDS), before the worker
  dispatch_bench.py drain IDS SEED             tasks/s from SEED's result to the last of IDS

Output is one JSON object per call on stdout.
"""

import json
import os
import statistics
import sys
import time
from datetime import datetime

import redis
from celery import Celery

URL = os.environ["BENCH_REDIS_URL"]
app = Celery("cms", broker=URL, backend=URL)
app.conf.update(task_serializer="json", accept_content=["application/json"])
rdb = redis.Redis.from_url(URL)

MISSING_ID = 2_000_000_000  # no files_encoding row has it: the task returns False after one read


def send(queue, i):
    res = app.send_task(
        "encode_media",
        args=["BenchTok%d" % i, 3, MISSING_ID - i],
        kwargs={"force": True},
        queue=queue,
        priority=0,
    )
    return res.id


def done_at(task_id, timeout=60.0, poll=0.002, pid=None):
    """Epoch seconds of the result's date_done, polling Redis until it is there (or the worker
    process `pid` has exited)."""
    key = "celery-task-meta-" + task_id
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pid is not None and not os.path.exists("/proc/%d" % pid):
            raise SystemExit("worker %d exited before %s finished" % (pid, task_id))
        raw = rdb.get(key)
        if raw is not None:
            meta = json.loads(raw)
            return datetime.fromisoformat(meta["date_done"]).timestamp()
        time.sleep(poll)
    raise SystemExit("no result for %s within %ss" % (task_id, timeout))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    mode = sys.argv[1]
    if mode == "seed":
        print(json.dumps({"id": send(sys.argv[2], 0)}))
    elif mode == "ready":
        task_id, t0, pid = sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
        first = done_at(task_id, timeout=120, pid=pid)
        print(json.dumps({"time_to_first_result_s": round(first - t0, 4)}))
    elif mode == "latency":
        queue, m, gap = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) / 1000
        lat = []
        for i in range(m):
            t = time.time()
            task_id = send(queue, i)
            lat.append(done_at(task_id) - t)
            time.sleep(gap)
        print(json.dumps({
            "latency_n": m,
            "latency_median_ms": round(statistics.median(lat) * 1000, 2),
            "latency_p95_ms": round(pct(lat, 95) * 1000, 2),
            "latency_max_ms": round(max(lat) * 1000, 2),
        }))
    elif mode == "prefill":
        queue, n, path = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        t0 = time.time()
        ids = [send(queue, i + 1) for i in range(n)]
        with open(path, "w") as f:
            json.dump(ids, f)
        print(json.dumps({"burst_n": n, "publish_s": round(time.time() - t0, 3)}))
    elif mode == "drain":
        # The backlog sits behind the seed (FIFO), so the drain runs from the seed's result to
        # the last one: the worker's own rate, not the producer's.
        ids, seed = json.load(open(sys.argv[2])), sys.argv[3]
        first = done_at(seed)
        last = max(done_at(i, timeout=600) for i in ids)
        print(json.dumps({
            "burst_s": round(last - first, 3),
            "tasks_per_s": round(len(ids) / (last - first), 1),
        }))
    else:
        raise SystemExit("unknown mode " + mode)


if __name__ == "__main__":
    main()
