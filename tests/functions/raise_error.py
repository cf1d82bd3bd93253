"""Raises: the runtime posts an error document and Invoke answers X-Amz-Function-Error: Unhandled."""


class SidecarFailure(Exception):
    pass


def handler(event, context):
    raise SidecarFailure(event.get("message", "boom"))
