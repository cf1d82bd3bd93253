"""Plan-based verb constraint at pre-processing.

The package key's plan lists the HTTP methods it may use in the package-key EAV ``allowed_verbs``
(e.g. ``GET,HEAD`` or ``GET | POST``; case-insensitive).  The request method comes from ``operation.httpVerb``
(``expand-input: operation``).

* method listed            -> ``{}`` (the call goes on unchanged)
* method not listed        -> 405 with an ``Allow`` header listing the plan's methods (RFC 9110 §15.5.6)
* key has no allowed_verbs -> 403: a key whose plan grants nothing may call nothing
"""

import re

_SPLIT = re.compile(r"[,|\s]+")


def _plan_verbs(text):
    verbs = []
    for item in _SPLIT.split(text or ""):
        verb = item.strip().upper()
        if verb and verb not in verbs:
            verbs.append(verb)
    return verbs


def handler(event, context):
    verbs = _plan_verbs((event.get("packageKeyEAVs") or {}).get("allowed_verbs"))
    if not verbs:
        return {"terminate": {"code": 403, "message": "Your plan does not allow any method on this API"}}
    method = ((event.get("operation") or {}).get("httpVerb") or "").upper()
    if method in verbs:
        return {}
    allow = ", ".join(verbs)
    return {
        "terminate": {
            "code": 405,
            "message": f"Method {method} is not allowed by your plan; allowed: {allow}",
            "addHeaders": {"Allow": allow},
        }
    }
