"""Pre-processing: allow with a modification: tell the backend who called (contract §4.4 ``addHeaders``)."""


def handler(event, context):
    tier = event.get("eavs", {}).get("tier", "standard")
    return {"modify": {"addHeaders": {"X-Demo-Caller": event.get("packageKey", "anonymous")[:4] + "...",
                                      "X-Demo-Tier": tier}}}
