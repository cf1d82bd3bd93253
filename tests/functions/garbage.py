"""Prints garbage (control characters, invalid UTF-8), then returns bytes that are not JSON
(awslambdaric passes a ``bytes`` result through unchanged)."""

import sys


def handler(event, context):
    print("\x1b[31mgarbage\x1b[0m \x07 on stdout")
    sys.stdout.buffer.write(b"\xff\xfe invalid utf-8\n")
    sys.stdout.flush()
    return b"this is <not> JSON {"
