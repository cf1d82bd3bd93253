"""``python -m sidecar_gateway.localrunner DIR [--listen HOST:PORT]``: serve DIR's functions until SIGTERM/SIGINT.

``add_arguments`` and ``run`` are what ``sidecar-gateway functions serve`` mounts as a subcommand.  When it is
listening, the runner prints one line ``Local Lambda runner listening on http://HOST:PORT ...`` (with the real
port when ``--listen`` asked for port 0); wrappers wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .manifest import DEFAULT_CONCURRENCY, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, Defaults, ManifestError, load_functions
from .server import DEFAULT_ACCOUNT_ID, DEFAULT_REGION, LocalLambdaRunner

__all__ = ["READY_LINE_PREFIX", "add_arguments", "main", "run"]

READY_LINE_PREFIX = "Local Lambda runner listening on "
DEFAULT_LISTEN = "127.0.0.1:9001"
# Exit statuses: 2 is argparse's for usage errors, used for a bad functions directory or manifest too.
EXIT_OK = 0
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="functions directory (functions.yaml and/or <name>.py files)")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"address of the Invoke API (default {DEFAULT_LISTEN}; port 0 picks a free port)")
    parser.add_argument("--region", default=DEFAULT_REGION, help=f"region used in ARNs (default {DEFAULT_REGION})")
    parser.add_argument("--account-id", default=DEFAULT_ACCOUNT_ID, help="account id used in ARNs")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"default function timeout in seconds (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MB,
                        help=f"default memory size in MB (default {DEFAULT_MEMORY_MB})")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"default concurrent executions per function (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--sigv4-credentials", type=Path, metavar="FILE",
                        help="verify SigV4 signatures; FILE is a JSON object access key id -> secret access key")


def run(args: argparse.Namespace) -> int:
    try:
        functions = load_functions(args.directory, Defaults(args.timeout, args.memory, args.concurrency))
        credentials = _read_credentials(args.sigv4_credentials) if args.sigv4_credentials else None
        host, port = _split_listen(args.listen)
    except (ManifestError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    runner = LocalLambdaRunner(
        args.directory, functions, host=host, port=port, region=args.region, account_id=args.account_id,
        verify_sigv4=credentials is not None, credentials=credentials,
    )
    asyncio.run(_serve(runner))
    return EXIT_OK


async def _serve(runner: LocalLambdaRunner) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    url = await runner.start()
    try:
        names = ", ".join(runner.functions)
        print(f"{READY_LINE_PREFIX}{url} (functions: {names}; SigV4 "
              f"{'verified' if runner.verifies_signatures else 'not verified'})", flush=True)
        await stop.wait()
    finally:
        await runner.stop()
        print("Local Lambda runner stopped", flush=True)


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen {listen!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _read_credentials(path: Path) -> dict[str, str]:
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not document or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in document.items()
    ):
        raise ValueError(f"{path}: expected a non-empty JSON object of access key id -> secret access key")
    return document


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar_gateway.localrunner", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
