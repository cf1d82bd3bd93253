"""At post, replaces the response body with JSON describing the backend response; at pre, allows."""


def handler(event, context):
    if event.get("point") != "PostProcessor":
        return {}
    response = event.get("response") or {}
    return {"modify": {"json": {"rewritten": True, "backendCode": response.get("code")}}}
