#!/usr/bin/env python3
"""More uploads from the reference one, for the container suite's multi-replica cases.

Writes SQL (stdout) that copies media 1 of upload_example.sql and its six Encodings into media
ids N.., and, into OUT_DIR, media 1's seven captured long_tasks messages rewritten for each copy
(friendly token, Encoding id, fresh task ids). Usage: uploads.py FIXTURES OUT_DIR FIRST_ID COUNT
"""
import base64
import json
import pathlib
import sys
import uuid

fixtures, out_dir, first, count = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ORIGINAL = "original/user/refuser/41905ce2087146cdba79c28a24c33a9a.reference_720p.mp4"
msgs = fixtures / "messages"
names = ["produce_sprite_from_video-1"] + [f"encode_media-{i}" for i in range(1, 7)]
out_dir.mkdir(parents=True, exist_ok=True)
sql = []


def rewrite(raw: bytes, token: str, enc_shift: int) -> bytes:
    env = json.loads(raw)
    args, kwargs, embed = json.loads(base64.b64decode(env["body"]))
    args[0] = token
    if len(args) >= 3:  # encode_media(friendly_token, profile_id, encoding_id, ...)
        args[2] = args[2] + enc_shift
    env["body"] = base64.b64encode(json.dumps([args, kwargs, embed]).encode()).decode()
    task_id = str(uuid.uuid4())
    headers = env["headers"]
    headers["id"] = headers["root_id"] = task_id
    headers["argsrepr"] = repr(list(args))
    env["properties"]["correlation_id"] = task_id
    env["properties"]["delivery_tag"] = str(uuid.uuid4())
    return json.dumps(env).encode()


for n in range(count):
    media_id = first + n
    token = f"suite{media_id:04d}"
    uid = uuid.uuid4().hex
    path = f"original/user/refuser/{uid}.reference_720p.mp4"
    enc_shift = media_id * 100  # Encodings 1..6 of media 1 become N*100+1..N*100+6
    sql.append(f"""
CREATE TEMP TABLE m AS SELECT * FROM files_media WHERE id = 1;
UPDATE m SET id = {media_id}, friendly_token = '{token}', uid = '{uid}', media_file = '{path}',
  media_info = replace(media_info, '{ORIGINAL}', '{path}');
INSERT INTO files_media SELECT * FROM m; DROP TABLE m;
CREATE TEMP TABLE e AS SELECT * FROM files_encoding WHERE media_id = 1;
UPDATE e SET id = id + {enc_shift}, media_id = {media_id};
INSERT INTO files_encoding SELECT * FROM e; DROP TABLE e;""")
    for name in names:
        raw = (msgs / f"{name}.json").read_bytes()
        (out_dir / f"{media_id}-{name}.json").write_bytes(rewrite(raw, token, enc_shift))
    print(path, file=sys.stderr)
print("\n".join(sql))
