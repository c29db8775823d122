"""Backlog benchmark driver (scripts/bench/backlog.sh): watch MediaCMS's own rows while one long
worker works through a backlog of uploads queued before it started.

Run with MediaCMS's venv python, cwd = the copy of MediaCMS, SUITE_* in the environment (the
differential suite's local_settings.py).

  backlog.py watch T0 TIMEOUT OUT    poll Postgres until every Encoding of every media has ended
                                     and every media has its sprite strip; T0 = the worker's
                                     start (epoch seconds). Writes OUT (JSON): per media the
                                     seconds from T0 to its first playable rendition (the first
                                     h264 Encoding `success`, by `update_date`) and to its last
                                     Encoding's end, plus their mean and max.

No Django import: plain SQL on MediaCMS's tables, so the watcher costs next to nothing.
"""

import json
import os
import sys
import time

import psycopg


def connect():
    return psycopg.connect(
        dbname=os.environ["SUITE_DB_NAME"],
        host=os.environ.get("SUITE_PG_HOST", "127.0.0.1"),
        port=os.environ.get("SUITE_PG_PORT", "5432"),
        user=os.environ.get("SUITE_PG_USER", "postgres"),
        password=os.environ.get("SUITE_PG_PASSWORD", "postgres"),
        autocommit=True,
    )


def state(c):
    media = c.execute("SELECT id, title, sprites FROM files_media ORDER BY id").fetchall()
    rows = c.execute(
        "SELECT e.media_id, p.codec, p.extension, e.status, extract(epoch FROM e.update_date) "
        "FROM files_encoding e JOIN files_encodeprofile p ON p.id = e.profile_id "
        "WHERE NOT e.chunk").fetchall()
    return media, rows


def done(media, rows):
    if not media or not rows:
        return False
    ended = all(st in ("success", "fail") for _, _, _, st, _ in rows)
    sprites = all(bool(s) for _, _, s in media)
    return ended and sprites


def summary(t0, media, rows):
    out = {}
    for mid, title, _ in media:
        mine = [r for r in rows if r[0] == mid]
        playable = [float(at) - t0 for _, codec, ext, st, at in mine
                    if st == "success" and codec == "h264" and ext == "mp4"]
        ends = [float(at) - t0 for _, _, _, st, at in mine]
        out[title] = {
            "first_playable_s": round(min(playable), 2) if playable else None,
            "all_done_s": round(max(ends), 2) if ends else None,
            "encodings": len(mine),
            "failed": sum(1 for r in mine if r[3] != "success"),
        }
    firsts = [m["first_playable_s"] for m in out.values() if m["first_playable_s"] is not None]
    return {
        "media": out,
        "mean_first_playable_s": round(sum(firsts) / len(firsts), 2) if firsts else None,
        "all_done_s": max(m["all_done_s"] for m in out.values()),
    }


def watch(t0, timeout, out):
    c = connect()
    deadline = time.time() + timeout
    while time.time() < deadline:
        media, rows = state(c)
        if done(media, rows):
            doc = summary(t0, media, rows)
            # Sprites included (their time is in no Encoding row).
            doc["everything_s"] = round(time.time() - t0, 2)
            with open(out, "w") as f:
                json.dump(doc, f, indent=1)
            print(json.dumps({k: v for k, v in doc.items() if k != "media"}), flush=True)
            return 0
        time.sleep(0.2)
    print("backlog: not done after %d s" % timeout, flush=True)
    return 1


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "watch":
        return watch(float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
    raise SystemExit("usage: backlog.py watch T0 TIMEOUT OUT")


if __name__ == "__main__":
    sys.exit(main())
