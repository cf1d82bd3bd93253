"""Allow: the empty output lets the call continue unchanged (contract §4.1)."""


def handler(event, context):
    return {}
