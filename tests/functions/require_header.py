"""Terminate with 401 when the request lacks an ``x-user`` header (the gateway must select it, contract §3.2)."""

REQUIRED = "x-user"


def handler(event, context):
    headers = (event.get("request") or {}).get("headers") or {}
    if not headers.get(REQUIRED):
        return {"terminate": {"code": 401, "message": f"Missing {REQUIRED} header"}}
    return {}
