"""Pre-processing: terminate with 401 unless the client sent ``X-Demo-Token: let-me-in``."""


def handler(event, context):
    token = event.get("request", {}).get("headers", {}).get("x-demo-token")
    if token != "let-me-in":
        return {"terminate": {"code": 401, "message": "Missing or wrong X-Demo-Token"}}
    return {}
