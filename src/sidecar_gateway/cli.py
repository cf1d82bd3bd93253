"""Command line (gateway-config.md): ``sidecar-gateway run CONFIG`` and ``sidecar-gateway check CONFIG``.

Exit statuses: 0 no ERROR; 1 at least one ERROR (``run`` refuses to start); 2 the file cannot be read or
parsed.  ``check`` writes problem lines to standard output, ``run`` to standard error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config.loader import load_config
from .config.problems import Level

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_UNREADABLE = 2


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 < int(port) < 65536):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidecar-gateway",
                                     description="API gateway with pre/post-processing sidecar functions")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve traffic")
    run.add_argument("config")
    run.add_argument("--listen", type=_split_listen, help="HOST:PORT, overrides `listen` from the file")
    run.add_argument("--workers", type=int, default=1, help="worker processes sharing the port (default 1)")
    check = sub.add_parser("check", help="validate the configuration without serving")
    check.add_argument("config")
    functions = sub.add_parser("functions", help="local function tools")
    fsub = functions.add_subparsers(dest="functions_command", required=True)
    fserve = fsub.add_parser("serve", help="serve Python functions behind a local Lambda Invoke API")
    from .localrunner.__main__ import add_arguments as add_runner_arguments

    add_runner_arguments(fserve)
    invoke = sub.add_parser("invoke", help="send one pre/post input to a function and explain its output")
    from .invoke import add_arguments as add_invoke_arguments

    add_invoke_arguments(invoke)
    demo = sub.add_parser("demo", help="run the demo: gateway + example backend + example functions")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--smoke", action="store_true", help="run the demo calls, check the answers, and exit")
    return parser


def _check(path: str) -> int:
    result = load_config(path)
    for p in result.problems:
        print(p.render())
    if result.unreadable:
        return EXIT_UNREADABLE
    errors = sum(1 for p in result.problems if p.level is Level.ERROR)
    warnings = len(result.problems) - errors
    print(f"{path}: {errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return EXIT_ERRORS if errors else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from .gateway.server import ServeOptions, serve

    result = load_config(args.config)
    for p in result.problems:
        print(p.render(), file=sys.stderr)
    if result.problems:
        errors = sum(1 for p in result.problems if p.level is Level.ERROR)
        print(f"{args.config}: {errors} error(s), {len(result.problems) - errors} warning(s)", file=sys.stderr)
    if result.unreadable:
        return EXIT_UNREADABLE
    if result.plan is None:
        return EXIT_ERRORS
    plan = result.plan
    host, port = args.listen if args.listen else (plan.listen_host, plan.listen_port)
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return EXIT_ERRORS
    return serve(plan, ServeOptions(config_path=args.config, host=host, port=port, workers=args.workers))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.config)
    if args.command == "run":
        return _run(args)
    if args.command == "functions":
        from .localrunner.__main__ import run as run_functions

        return run_functions(args)
    if args.command == "invoke":
        from .invoke import run as run_invoke

        return run_invoke(args)
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(port=args.port, smoke=args.smoke)
    return EXIT_ERRORS


if __name__ == "__main__":
    sys.exit(main())
