"""Prints ``lines`` lines (default 20,000 of 100 characters, about 2 MB: far more than a pipe buffer)."""

FILLER = "x" * 94


def handler(event, context):
    lines = int(event.get("lines", 20_000))
    for number in range(lines):
        print(f"{number:05d} {FILLER}")
    return {"printed": lines}
