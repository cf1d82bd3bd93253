"""Asynchronous analytics in event mode.

Configured with ``synchronicity: event``: the gateway invokes the function asynchronously (Lambda ``Event``
invocation), does not wait and ignores the output, so analytics add no latency and can never break a call.

Each invocation appends one JSON line to the file named by the ``ANALYTICS_FILE`` environment variable (in
production point it at a mounted EFS path, or swap the sink for Kinesis / a Redis stream).  A line is written
with a single ``write`` on a file opened in append mode, so concurrent execution environments do not interleave
lines.  The package key is not recorded in clear: only its first four characters, like the gateway's access log.
"""

import json
import os
import time


def _mask_key(key):
    return key[:4] + "…" if key else None


def record(event):
    operation = event.get("operation") or {}
    return {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "masheryMessageId": event.get("masheryMessageId"),
        "point": event.get("point"),
        "serviceId": event.get("serviceId"),
        "endpointId": event.get("endpointId"),
        "packageKey": _mask_key(event.get("packageKey")),
        "method": operation.get("httpVerb"),
        "path": operation.get("path"),
        "remoteAddr": event.get("remoteAddr"),
    }


def handler(event, context):
    path = os.environ.get("ANALYTICS_FILE")
    if not path:
        raise RuntimeError("ANALYTICS_FILE is not set")
    line = json.dumps(record(event), ensure_ascii=False, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    return {}
