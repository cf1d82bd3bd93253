"""Pre-processing: let every call through unchanged (contract §4.1 ``{}``)."""


def handler(event, context):
    return {}
