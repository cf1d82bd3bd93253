"""Returns an object the runtime cannot serialise: the runtime reports Runtime.MarshalError."""


def handler(event, context):
    return {"value": object()}
