"""Validate every golden and every real MediaCMS message against the JSON Schemas here.

    PYTHONPATH=<dir with jsonschema> .venv/bin/python proto/check_schemas.py
"""

import base64
import glob
import json
import os
import sys

import jsonschema
from referencing import Registry, Resource

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("MEDIACMS_SHARED", os.path.join(HERE, "..", "tests", "fixtures"))


def load(name):
    with open(os.path.join(HERE, name)) as f:
        return json.load(f)


SCHEMAS = {n: load(n) for n in ["redis-envelope.schema.json", "task-v2-headers.schema.json",
                                "task-v2-body.schema.json", "result.schema.json",
                                "control-reply.schema.json"]}
REGISTRY = Registry().with_resources(
    [(name, Resource.from_contents(s)) for name, s in SCHEMAS.items()]
    + [(s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values()])


def validate(instance, schema_name, what):
    schema = SCHEMAS[schema_name]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, registry=REGISTRY).validate(instance)
    print(f"ok  {schema_name:30} {what}")


def main():
    messages = sorted(glob.glob(os.path.join(HERE, "golden", "*", "*.json")))
    messages += sorted(glob.glob(os.path.join(SHARED, "mediacms", "messages", "*.json")))
    for path in messages:
        name = os.path.basename(path)
        if name == "manifest.json":
            continue
        doc = json.load(open(path))
        if name.startswith("result-"):
            validate(doc, "result.schema.json", path)
            continue
        validate(doc, "redis-envelope.schema.json", path)
        validate(json.loads(base64.b64decode(doc["body"])), "task-v2-body.schema.json", path)
    # celery-wire §7's captured ping reply (no golden capture of pidbox replies yet).
    body = {"w1@vm": {"ok": "pong"}}
    reply = {"body": base64.b64encode(json.dumps(body).encode()).decode(), "content-encoding": "utf-8",
             "content-type": "application/json", "headers": {"ticket": "a5c97007", "clock": 3},
             "properties": {"delivery_mode": 1, "delivery_info": {"exchange": "reply.celery.pidbox",
                            "routing_key": "4ada8919"}, "priority": 0, "body_encoding": "base64",
                            "delivery_tag": "5b1f2b36-0d4c-4b39-9a1e-4f0f6e0a1c11"}}
    validate(reply, "control-reply.schema.json", "celery-wire §7 ping reply")
    body_schema = {"$ref": "control-reply.schema.json#/$defs/body"}
    jsonschema.Draft202012Validator(body_schema, registry=REGISTRY).validate(body)
    print("ok  control-reply.schema.json#/$defs/body  {hostname: payload}")
    two_bad = [{"body": "x"}, [["a"], {}]]
    for bad, schema in zip(two_bad, ["redis-envelope.schema.json", "task-v2-body.schema.json"]):
        try:
            validate(bad, schema, "must fail")
        except jsonschema.ValidationError:
            print(f"ok  {schema:30} rejects {bad!r}")
        else:
            sys.exit(f"{schema} accepted {bad!r}")


if __name__ == "__main__":
    main()
