"""Modify: adds a header to the backend request (pre) or the client response (post) (contract §4.2)."""

HEADER = "X-Sidecar-Added"


def handler(event, context):
    return {"modify": {"addHeaders": {HEADER: f"by {context.function_name}"}}}
