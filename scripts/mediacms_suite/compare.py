"""Compare two snapshots of the differential suite (Python celery_long vs mediacms-worker).

    compare.py PYTHON.json RUST.json ALLOW_LIST

Each media becomes a flat map of facts (`encodings/h264-360/probe/video.width` → 640) with the
run's random parts normalised (uid, friendly token, temp names, Django's collision suffixes,
dates). Every key whose values differ is a difference; one that matches an allow-list entry
(`MEDIA/KEY-GLOB [~N%] | reason`; with `~N%` only numbers within N % of each other) is allowed (the entry's reason is printed with it), any other is unexplained and fails the suite.
Last line: `mediacms suite: N media, N identical, N allowed differences, N unexplained`.
"""

import fnmatch
import json
import re
import sys

# The API fields a worker's work shows up in (the rest are the upload's: views, likes, dates…).
API_FIELDS = (
    "encoding_status", "state", "is_reviewed", "duration", "media_type", "video_height",
    "encodings_info", "hls_info", "preview_url", "sprites_url", "original_media_url",
    "poster_url", "thumbnail_url", "size",
)


def normaliser(media):
    uid, token = media["uid"], media["friendly_token"]
    rules = [
        (re.compile(re.escape(uid)), "<uid>"),
        (re.compile(re.escape(token)), "<token>"),
        # NamedTemporaryFile names (MediaCMS's GIF names) and Django's `_<7 random>` suffix.
        (re.compile(r"tmp[a-z0-9_]{8}"), "<tmp>"),
        (re.compile(r"_[A-Za-z0-9]{7}(?=\.)"), "_<rnd>"),
        (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?"), "<date>"),
    ]

    def norm(value):
        if isinstance(value, str):
            for pattern, repl in rules:
                value = pattern.sub(repl, value)
        return value

    return norm


def flatten(prefix, value, out, norm):
    if isinstance(value, dict):
        if not value:
            out[prefix] = "{}"
        for k, v in value.items():
            flatten(f"{prefix}/{norm(k)}", v, out, norm)
    elif isinstance(value, list):
        out[prefix + "/len"] = len(value)
        for i, v in enumerate(value):
            flatten(f"{prefix}/{i}", v, out, norm)
    else:
        out[prefix] = norm(value)


def facts(media):
    norm = normaliser(media)
    out = {}
    for key in ("encoding_status", "state", "listable", "api_status"):
        out[key] = media[key]
    api = media.get("api") or {}
    for key in API_FIELDS:
        if key in api:
            flatten(f"api/{key}", api[key], out, norm)
    for enc in media["encodings"]:
        name = enc["profile"] + ("/chunk" if enc["chunk"] else "")
        flatten(f"encodings/{name}", {k: v for k, v in enc.items() if k not in ("profile", "chunk")}, out, norm)
    flatten("sprites", media["sprites"], out, norm)
    flatten("preview", media["preview"], out, norm)
    flatten("hls_info", media["hls_info"], out, norm)
    return out


def load_allow_list(path):
    entries = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            pattern, sep, reason = line.partition(" | ")
            if not sep or not reason.strip():
                sys.exit(f"{path}:{n}: an entry is `MEDIA/KEY-GLOB [~N%] | reason`; the reason is missing")
            pattern, _, tolerance = pattern.strip().partition(" ~")
            tol = float(tolerance.rstrip("%")) / 100 if tolerance else None
            entries.append((pattern.strip(), reason.strip(), n, tol))
    return entries


def allows(entry, path, a, b):
    """An entry allows a difference at `path`; one with a tolerance (`~N%`) only numbers that
    differ by at most N % of the larger."""
    pattern, _, _, tol = entry
    if not fnmatch.fnmatchcase(path, pattern):
        return False
    if tol is None:
        return True
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return numbers and abs(a - b) <= tol * max(abs(a), abs(b))


def show(v):
    return "<absent>" if v is None else json.dumps(v)


def main(python_path, rust_path, allow_path):
    with open(python_path) as f:
        python = json.load(f)
    with open(rust_path) as f:
        rust = json.load(f)
    allow = load_allow_list(allow_path)
    used = set()
    identical = allowed = unexplained = 0
    for title in sorted(set(python) | set(rust)):
        if title not in python or title not in rust:
            print(f"{title}: only in the {'python' if title in python else 'rust'} run  UNEXPLAINED")
            unexplained += 1
            continue
        a, b = facts(python[title]), facts(rust[title])
        diffs = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if not diffs:
            identical += 1
            print(f"{title}: identical ({len(a)} facts)")
            continue
        print(f"{title}: {len(diffs)} difference(s) in {len(set(a) | set(b))} facts")
        for key in diffs:
            path = f"{title}/{key}"
            entry = next((e for e in allow if allows(e, path, a.get(key), b.get(key))), None)
            line = f"  {key}: python={show(a.get(key))} rust={show(b.get(key))}"
            if entry:
                allowed += 1
                used.add(entry[2])
                print(f"{line}  allowed: {entry[1]}")
            else:
                unexplained += 1
                print(f"{line}  UNEXPLAINED")
    for pattern, reason, n, _ in allow:
        if n not in used:
            print(f"note: allow-list line {n} ({pattern}) matched nothing this run")
    print(f"mediacms suite: {len(set(python) | set(rust))} media, {identical} identical, "
          f"{allowed} allowed differences, {unexplained} unexplained")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
