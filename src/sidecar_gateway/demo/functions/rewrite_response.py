"""Post-processing: wrap the backend's JSON answer in an envelope and answer 200 (contract §4.4 ``json``)."""

import base64
import json


def handler(event, context):
    response = event.get("response", {})
    payload = response.get("payload")
    if payload is not None and response.get("payloadBase64Encoded"):
        payload = base64.b64decode(payload).decode("utf-8", "replace")
    try:
        original = json.loads(payload) if payload else None
    except ValueError:
        original = payload
    return {"modify": {"json": {"rewrittenBy": "rewrite_response", "backendStatus": response.get("code"),
                                "original": original},
                       "addHeaders": {"X-Demo-Rewritten": "yes"}}}
