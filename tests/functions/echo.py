"""Echoes the event back: ``handler`` inside a header (JSON text), ``as_json`` as the replacement body."""

import json


def handler(event, context):
    return {"modify": {"addHeaders": {"X-Echo-Event": json.dumps(event, separators=(",", ":"))}}}


def as_json(event, context):
    return {"modify": {"json": event}}
