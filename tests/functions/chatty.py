"""Prints ``lines`` lines (default 20,000 of 100 characters, about 2 MB: far more than a pipe buffer)."""

LINE = "x" * 96


def handler(event, context):
    lines = int(event.get("lines", 20_000))
    for number in range(lines):
        print(f"{number:>3} {LINE}"[-100:])
    return {"printed": lines}
