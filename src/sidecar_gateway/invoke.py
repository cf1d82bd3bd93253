"""``sidecar-gateway invoke``: send one pre- or post-processing input to a function and explain the answer.

The processor is either one of a configuration file (``--config FILE --endpoint ID --point pre|post``) or
an ad-hoc processor text (``--processor-text`` / ``--processor-file``, compiled against a synthetic
endpoint whose backend is ``--target``).  The sample client request comes from flags or from a ``.http``
file (VS Code REST Client / JetBrains format, first request only); at post the backend response comes from
``--response-*`` flags.

What is printed, in order: the input (§3, built by the gateway's own ``build_input``), the raw output, the
validation result (the gateway's ``interpret_output`` for §4.3, plus the published output JSON Schema for the
input's point), and the verdict the gateway would apply (§4.4): for ``modify`` the header lists before and
after and a unified diff of the body (computed by ``sidecar.apply`` on the sample backend request or
response), for ``terminate`` the status, headers and body the client would get, for failures the §5.3 error
name, status and message as rendered by the gateway (§6.2).

The function is invoked once, with ``RequestResponse`` semantics even for an ``event`` processor (the point
is to see the output), through the same transports the gateway uses (``engine.make_transport``): AWS Lambda
(AWS, or the local runner with ``AWS_ENDPOINT_URL_LAMBDA``), HTTP, or an in-process Python handler.

Exit statuses: 0 the output is valid (allow, modify or terminate; an accepted invocation counts as allow);
1 the output is invalid or the invocation failed (§5.3 rows other than Output/Accepted); 2 usage or
configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import difflib
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from .config.loader import load_config
from .config.plan import (
    Application,
    AwsLambdaConnection,
    EndpointPlan,
    HttpConnection,
    Mode,
    PackageKey,
    ProcessorPlan,
    PythonConnection,
    SidecarSettings,
    Target,
)
from .config.problems import Level
from .config.processor import compile_processor
from .errors import ClientError, ErrorCode, FunctionFailure, InvocationError, Point
from .gateway.headers import MESSAGE_ID, forward_request_headers, strip_hop_by_hop
from .gateway.keys import find_key
from .gateway.proxy import backend_path
from .gateway.responses import Reply, render_error, render_termination_message
from .sdk import input_schema, output_schema
from .sidecar.apply import apply_to_request, apply_to_response, terminate_headers
from .sidecar.call import BackendRequest, BackendResponse, CallContext, ClientRequest
from .sidecar.conditions import check_conditions, check_payload_limits, in_scope
from .sidecar.input_builder import build_input
from .sidecar.output_interpreter import function_failure, interpret_output
from .sidecar.verdict import Modification, Termination, Verdict, VerdictKind
from .transports.base import InvocationType, InvokeResult, ResultKind

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_USAGE", "add_arguments", "parse_http_file", "run"]

EXIT_OK = 0  # valid output: allow / modify / terminate (or accepted)
EXIT_INVALID = 1  # invalid output, or the invocation failed (§5.3)
EXIT_USAGE = 2  # usage or configuration error

AD_HOC_SERVICE_ID = "invoke-service"  # serviceId/endpointId of the synthetic endpoint of an ad-hoc processor
AD_HOC_ENDPOINT_ID = "invoke-endpoint"
AD_HOC_TIMEOUT_S = 30.0  # the gateway's default endpoint timeout (gateway-config.md)
DEFAULT_TARGET = "http://backend.local/"  # synthetic backend of an ad-hoc processor (never contacted)
DEFAULT_HOST = "api.local"  # Host of the sample request when neither a header nor an absolute URL gives one
DEFAULT_CLIENT_IP = "127.0.0.1"
AD_HOC_APPLICATION_ID = "invoke-application"  # application of a package key the configuration does not know
HTTP_FILE_SEPARATOR = "###"  # REST Client / JetBrains: separates requests in a .http file
HTTP_FILE_COMMENTS = ("#", "//")
HTTP_FILE_BODY_FROM_FILE = "< "  # REST Client / JetBrains: "< ./path" takes the body from a file
JSON_INDENT = 2

_POINTS = {"pre": Point.PRE, "post": Point.POST}
_RULE = "=" * 100


class UsageError(Exception):
    """Bad flags, unreadable files or a configuration with errors: exit status 2."""


# ---------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``sidecar-gateway invoke`` (see the module docstring and docs/function-authors.md)."""
    source = parser.add_argument_group("processor (one of)")
    source.add_argument("--config", help="gateway configuration file; use with --endpoint")
    source.add_argument("--processor-text", help="ad-hoc processor configuration text (contract §2), e.g. "
                        "'stack: http\\nurl: http://127.0.0.1:9000/' (\\n is a line break)")
    source.add_argument("--processor-file", help="file holding an ad-hoc processor configuration text")
    parser.add_argument("--endpoint", help="endpoint id in --config")
    parser.add_argument("--point", required=True, choices=sorted(_POINTS), help="processing point")
    parser.add_argument("--target", default=DEFAULT_TARGET,
                        help=f"backend URL of the synthetic endpoint of an ad-hoc processor (default {DEFAULT_TARGET})")
    parser.add_argument("--timeout", type=float, help="deadline in seconds (default: the processor's)")

    request = parser.add_argument_group("sample client request")
    request.add_argument("--request", metavar="FILE", help=".http file (first request only)")
    request.add_argument("--method", help="HTTP method (default GET, or POST when a body is given)")
    request.add_argument("--path", help="path after the endpoint's public path, with an optional ?query (default /)")
    request.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="repeatable")
    body = request.add_mutually_exclusive_group()
    body.add_argument("--data", help="request body text")
    body.add_argument("--data-file", help="request body from a file")
    request.add_argument("--key", help="package key (default: read from the request like the gateway does)")
    request.add_argument("--client-ip", default=DEFAULT_CLIENT_IP, help=f"client address (default {DEFAULT_CLIENT_IP})")
    request.add_argument("--eav", action="append", default=[], metavar="NAME=VALUE",
                         help="application EAV (added to the configuration's), repeatable")
    request.add_argument("--key-eav", action="append", default=[], metavar="NAME=VALUE",
                         help="package-key EAV (added to the configuration's), repeatable")

    response = parser.add_argument_group("sample backend response (post)")
    response.add_argument("--response-status", type=int, default=200, help="backend status (default 200)")
    response.add_argument("--response-header", action="append", default=[], metavar="'NAME: VALUE'")
    response_body = response.add_mutually_exclusive_group()
    response_body.add_argument("--response-body", help="backend response body text")
    response_body.add_argument("--response-body-file", help="backend response body from a file")

    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON report")


# ---------------------------------------------------------------------------------------------------------------
# The sample request (flags or .http file)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SampleRequest:
    """A client request as the user described it (``path`` is the full path when ``full_path``)."""

    method: str = "GET"
    scheme: str = "http"
    host: str | None = None
    path: str = "/"
    query: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    full_path: bool = False  # True for .http files: the public path is still in ``path``


def _header_line(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or name != name.strip():
        raise UsageError(f"expected 'Name: value', got {text!r}")
    return name, value.strip()


def _split_target(target: str, sample: SampleRequest) -> None:
    if "://" in target:
        parts = urlsplit(target)
        sample.scheme = parts.scheme.lower() or "http"
        sample.host = parts.netloc or None
        sample.path = parts.path or "/"
        sample.query = parts.query
    else:
        path, _, query = target.partition("?")
        sample.path = path or "/"
        sample.query = query


def parse_http_file(text: str, base_dir: Path) -> SampleRequest:
    """The first request of a ``.http`` file: request line (``[METHOD] URL [HTTP/x]``), headers, blank line,
    body up to the next ``###``.  Comments (``#``, ``//``) and ``@variable`` lines before the request line
    are skipped; query continuation lines (``?a=1`` / ``&b=2``) after it are joined; a body of
    ``< path`` is read from that file (relative to the .http file)."""
    lines = text.splitlines()
    i, n = 0, len(lines)
    while i < n and (not lines[i].strip() or lines[i].lstrip().startswith((*HTTP_FILE_COMMENTS, "@"))):
        i += 1
    if i == n:
        raise UsageError("the .http file holds no request")
    words = lines[i].split()
    sample = SampleRequest(full_path=True)
    if len(words) == 1:
        target = words[0]
    else:
        sample.method, target = words[0].upper(), words[1]
    i += 1
    while i < n and lines[i].lstrip().startswith(("?", "&")):
        target += lines[i].strip()
        i += 1
    _split_target(target, sample)
    while i < n and lines[i].strip():
        line = lines[i]
        i += 1
        if line.lstrip().startswith(HTTP_FILE_COMMENTS):
            continue
        sample.headers.append(_header_line(line))
    body_lines: list[str] = []
    for line in lines[i + 1:]:
        if line.startswith(HTTP_FILE_SEPARATOR):
            break
        body_lines.append(line)
    while body_lines and not body_lines[-1].strip():
        body_lines.pop()
    if len(body_lines) == 1 and body_lines[0].startswith(HTTP_FILE_BODY_FROM_FILE):
        sample.body = _read_bytes(base_dir / body_lines[0][len(HTTP_FILE_BODY_FROM_FILE):].strip())
    else:
        sample.body = "\n".join(body_lines).encode("utf-8")
    return sample


def _read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _sample_request(args: argparse.Namespace) -> SampleRequest:
    if args.request:
        sample = parse_http_file(_read_bytes(args.request).decode("utf-8", errors="replace"),
                                 Path(args.request).resolve().parent)
    else:
        sample = SampleRequest()
    if args.path is not None:
        absolute = "://" in args.path
        _split_target(args.path if absolute or args.path.startswith("/") else "/" + args.path, sample)
        sample.full_path = absolute
    sample.headers += [_header_line(h) for h in args.header]
    if args.data is not None:
        sample.body = args.data.encode("utf-8")
    elif args.data_file is not None:
        sample.body = _read_bytes(args.data_file)
    if args.method:
        sample.method = args.method.upper()
    elif not args.request and sample.body:
        sample.method = "POST"
    return sample


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} expects NAME=VALUE, got {value!r}")
        out[name] = text
    return out


# ---------------------------------------------------------------------------------------------------------------
# The processor (configuration file or ad-hoc text)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Setup:
    endpoint: EndpointPlan
    plan: ProcessorPlan
    keys: Mapping[str, PackageKey]
    settings: SidecarSettings
    notes: list[str] = field(default_factory=list)


def _target(url: str) -> Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--target must be an absolute http(s) URL, got {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    return Target(scheme=scheme, host=parts.hostname, port=port, base_path=parts.path.rstrip("/"), query=parts.query)


def _from_config(args: argparse.Namespace, point: Point) -> Setup:
    if not args.endpoint:
        raise UsageError("--config needs --endpoint ENDPOINT_ID")
    result = load_config(args.config)
    errors = [p for p in result.problems if p.level is Level.ERROR]
    if result.plan is None:
        lines = "\n".join(p.render() for p in (errors or result.problems))
        raise UsageError(f"{args.config}: the configuration cannot be used:\n{lines}")
    for endpoint in result.plan.endpoints:
        if endpoint.endpoint_id == args.endpoint:
            break
    else:
        known = ", ".join(e.endpoint_id for e in result.plan.endpoints)
        raise UsageError(f"{args.config}: no endpoint {args.endpoint!r} (endpoints: {known})")
    plan = endpoint.pre if point is Point.PRE else endpoint.post
    if plan is None:
        raise UsageError(f"endpoint {args.endpoint!r} has no {point.value}-processor")
    notes = [p.render() for p in result.problems]  # warnings only at this stage
    return Setup(endpoint, plan, result.plan.keys, result.plan.sidecar, notes)


def _ad_hoc(args: argparse.Namespace, point: Point) -> Setup:
    if args.processor_text is not None:
        text = args.processor_text.replace("\\n", "\n")
    else:
        text = _read_bytes(args.processor_file).decode("utf-8")
    target = _target(args.target)
    settings = SidecarSettings()
    plan, problems = compile_processor(text, point=point, service_id=AD_HOC_SERVICE_ID,
                                       endpoint_id=AD_HOC_ENDPOINT_ID, endpoint_timeout_s=AD_HOC_TIMEOUT_S,
                                       settings=settings, environ=os.environ)
    if plan is None:
        raise UsageError("the processor configuration has errors:\n" + "\n".join(p.render() for p in problems))
    endpoint = EndpointPlan(service_id=AD_HOC_SERVICE_ID, endpoint_id=AD_HOC_ENDPOINT_ID, public_path="/",
                            target=target, timeout_s=AD_HOC_TIMEOUT_S,
                            route_hosts=frozenset({target.authority.lower()}), **{point.value: plan})
    return Setup(endpoint, plan, {}, settings, [p.render() for p in problems])


def _setup(args: argparse.Namespace) -> Setup:
    point = _POINTS[args.point]
    sources = [s for s in (args.config, args.processor_text, args.processor_file) if s is not None]
    if len(sources) != 1:
        raise UsageError("give exactly one of --config, --processor-text, --processor-file")
    setup = _from_config(args, point) if args.config is not None else _ad_hoc(args, point)
    if args.timeout is not None:
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        setup.plan = dataclasses.replace(setup.plan, deadline_s=args.timeout)
    return setup


# ---------------------------------------------------------------------------------------------------------------
# The call: client request, backend request, backend response (as the gateway builds them, gateway/app.py)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Call:
    call: CallContext
    backend: BackendRequest  # pre: before modification
    response: BackendResponse | None  # post only


def _remainder(sample: SampleRequest, public_path: str, notes: list[str]) -> str:
    """The raw remainder after the public path ('' when the path is the public path itself, as the router
    reports it)."""
    if not sample.full_path or public_path == "/":
        return sample.path if sample.path.startswith("/") else "/" + sample.path
    path = sample.path
    if path == public_path or path.startswith(public_path + "/"):
        return path[len(public_path):]
    notes.append(f"the request path {path!r} is not under the endpoint's public path {public_path!r}: "
                 "used as the remainder as it is")
    return path


def _package_key(args: argparse.Namespace, setup: Setup, query: str,
                 headers: list[tuple[bytes, bytes]]) -> PackageKey | None:
    presented = args.key or find_key(setup.endpoint.key_location, query, headers)
    app_eavs, key_eavs = _pairs(args.eav, "--eav"), _pairs(args.key_eav, "--key-eav")
    if presented is None:
        if setup.endpoint.key_required:
            setup.notes.append("no package key in the request: the gateway would answer 403 before any sidecar "
                               "(use --key); invoking anyway without packageKey")
        return None
    known = setup.keys.get(presented)
    if known is None:
        if setup.keys:
            setup.notes.append(f"package key {presented!r} is not in the configuration: the gateway would answer "
                               "403; invoking anyway with the --eav/--key-eav values only")
        application = Application(id=AD_HOC_APPLICATION_ID, eavs=app_eavs)
        return PackageKey(key=presented, application=application, eavs=key_eavs)
    application = dataclasses.replace(known.application, eavs={**known.application.eavs, **app_eavs})
    return dataclasses.replace(known, application=application, eavs={**known.eavs, **key_eavs})


def _build_call(args: argparse.Namespace, setup: Setup, sample: SampleRequest) -> Call:
    endpoint = setup.endpoint
    headers = [(name.lower().encode("latin-1"), value.encode("utf-8")) for name, value in sample.headers]
    host = next((v.decode("latin-1") for k, v in headers if k == b"host"), None)
    if host is None:
        host = sample.host or DEFAULT_HOST
        headers.insert(0, (b"host", host.encode("latin-1")))
    if sample.body and all(k != b"content-length" for k, _ in headers):
        headers.append((b"content-length", str(len(sample.body)).encode("ascii")))
    public_path = endpoint.public_path
    remainder = _remainder(sample, public_path, setup.notes)
    raw_path = remainder if public_path == "/" else public_path + remainder
    request = ClientRequest(method=sample.method, scheme=sample.scheme, host=host, raw_path=raw_path or "/",
                            remainder=remainder or "/", query_string=sample.query, headers=headers,
                            client_addr=args.client_ip, body=sample.body or None)
    target = endpoint.target
    backend = BackendRequest(
        method=sample.method, scheme=target.scheme, host=target.host, port=target.port,
        path_qs=backend_path(target, remainder, sample.query),
        headers=forward_request_headers(headers, peer=args.client_ip, peer_trusted=False, scheme=sample.scheme,
                                        host=host.encode("latin-1"), backend_host=target.host_header),
        body=sample.body or None,
    )
    call = CallContext(message_id=str(uuid.uuid4()), endpoint=endpoint, request=request,
                       package_key=_package_key(args, setup, sample.query, headers))
    response: BackendResponse | None = None
    if setup.plan.point is Point.POST:
        body = (args.response_body.encode("utf-8") if args.response_body is not None
                else _read_bytes(args.response_body_file) if args.response_body_file is not None else b"")
        response_headers = [(name.lower().encode("latin-1"), value.encode("utf-8"))
                            for name, value in map(_header_line, args.response_header)]
        if body and all(k != b"content-length" for k, _ in response_headers):
            response_headers.append((b"content-length", str(len(body)).encode("ascii")))
        response = BackendResponse(status=args.response_status, headers=strip_hop_by_hop(response_headers),
                                   body=body)
        # Post input: ``routing`` is the backend request as sent, message id included (§3.4, §5.1 P12).
        backend.headers = [(k, v) for k, v in backend.headers if k != MESSAGE_ID]
        backend.headers.append((MESSAGE_ID, call.message_id.encode("ascii")))
    return Call(call, backend, response)


def _gateway_notes(setup: Setup, call: Call) -> None:
    """What the gateway would do before calling (§5.1 P4–P7, §5.2 Q2–Q4): reported, never enforced here."""
    plan = setup.plan
    if plan.mode is not Mode.REQUEST_RESPONSE or plan.shadow:
        setup.notes.append(f"synchronicity {plan.mode.value}{' (shadow)' if plan.shadow else ''}: the gateway "
                           "never applies this output; invoked with RequestResponse to show it")
    if plan.scope and not in_scope(plan, call.call):
        setup.notes.append("out of scope (§9.2): the gateway would skip this processor")
    try:
        check_conditions(plan, call.call)
        if not check_payload_limits(plan, call.call, call.response):
            setup.notes.append("payload over max-payload-size with filtering: the gateway would skip the call")
    except ClientError as err:
        setup.notes.append(f"the gateway would answer {err.status} {err.error_name}: {err.error_message} "
                           "before calling the function; invoking anyway")


# ---------------------------------------------------------------------------------------------------------------
# Invocation (the gateway's transports, classified as in sidecar/decision.py ``Processor._invoke``)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    result: InvokeResult | None = None
    failure: FunctionFailure | None = None  # timeout / transport failure (§5.3)
    elapsed_ms: float = 0.0


async def _invoke(plan: ProcessorPlan, settings: SidecarSettings, payload: bytes, message_id: str) -> Outcome:
    from .sidecar.engine import SidecarServices, make_transport  # binds an HTTP client to this loop

    services = SidecarServices.create(settings)
    transport = make_transport(plan, services)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + plan.deadline_s
    started = time.perf_counter()
    outcome = Outcome()
    try:
        async with asyncio.timeout_at(deadline):
            outcome.result = await transport.invoke(payload, invocation_type=InvocationType.REQUEST_RESPONSE,
                                                    message_id=message_id, deadline=deadline)
    except TimeoutError:
        outcome.failure = FunctionFailure(ErrorCode.FUNCTION_TIMEOUT, point=plan.point)
    except InvocationError as exc:
        outcome.failure = exc.for_point(plan.point)
    finally:
        outcome.elapsed_ms = (time.perf_counter() - started) * 1000
        await transport.aclose()
        await services.aclose()
    return outcome


def _classify(outcome: Outcome, setup: Setup) -> tuple[Verdict | None, FunctionFailure | None, str | None]:
    """→ (verdict, failure, interpreter's reason for an invalid output)."""
    if outcome.failure is not None:
        return None, outcome.failure, None
    result = outcome.result
    assert result is not None
    point = setup.plan.point
    if result.kind is ResultKind.ACCEPTED:
        return Verdict(VerdictKind.ALLOW), None, None
    if result.kind is ResultKind.FUNCTION_ERROR:
        return None, function_failure(result.body, result.function_error, point), None
    try:
        verdict = interpret_output(result.body, point, backend_authority=setup.endpoint.target.authority.lower(),
                                   route_hosts=setup.endpoint.route_hosts, now=time.time())
    except FunctionFailure as failure:
        reason = str(failure.__cause__) if failure.__cause__ is not None else failure.error_message
        return None, failure, reason
    return verdict, None, None


# ---------------------------------------------------------------------------------------------------------------
# Validation against the published schemas
# ---------------------------------------------------------------------------------------------------------------


def _schema_errors(instance: Any, schema: dict[str, Any]) -> list[str] | None:
    """Error lines (``path: message``), [] when valid, None when ``jsonschema`` is not installed."""
    try:
        import jsonschema
    except ImportError:
        return None
    validator = jsonschema.Draft202012Validator(schema)
    lines: list[str] = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        leaf = jsonschema.exceptions.best_match(error.context) if error.context else error
        path = "/".join(str(p) for p in leaf.absolute_path) or "(root)"
        description = leaf.schema.get("description") if isinstance(leaf.schema, dict) else None
        if leaf.validator in ("not", "pattern") and description:  # the raw regex helps nobody
            lines.append(f"{path}: {leaf.instance!r} breaks {description}")
        else:
            lines.append(f"{path}: {leaf.message}")
    return lines


def _schema_report(instance: Any, schema: dict[str, Any], name: str) -> dict[str, Any]:
    errors = _schema_errors(instance, schema)
    if errors is None:
        return {"schema": name, "valid": None, "skipped": "jsonschema is not installed", "errors": []}
    return {"schema": name, "valid": not errors, "errors": errors}


# ---------------------------------------------------------------------------------------------------------------
# Verdict effects (§4.4), computed with sidecar.apply on copies of the sample
# ---------------------------------------------------------------------------------------------------------------


def _header_lines(headers: list[tuple[bytes, bytes]]) -> list[str]:
    return [f"{k.decode('latin-1')}: {v.decode('utf-8', errors='replace')}" for k, v in headers]


def _text_or_none(body: bytes | None) -> str | None:
    if body is None:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _body_report(before: bytes, after: bytes) -> dict[str, Any]:
    report: dict[str, Any] = {"changed": before != after, "bytesBefore": len(before), "bytesAfter": len(after)}
    before_text, after_text = _text_or_none(before), _text_or_none(after)
    if before_text is None or after_text is None:
        report["diff"] = f"(binary body: {len(before)} bytes -> {len(after)} bytes)" if before != after else ""
        return report
    report["after"] = after_text
    report["diff"] = "\n".join(difflib.unified_diff(before_text.splitlines(), after_text.splitlines(),
                                                    fromfile="body before", tofile="body after", lineterm=""))
    return report


def _headers_report(before: list[tuple[bytes, bytes]], after: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    b, a = _header_lines(before), _header_lines(after)
    added, removed = Counter(a) - Counter(b), Counter(b) - Counter(a)
    return {"before": b, "after": a, "added": [h for h in a if added[h] > 0],
            "removed": [h for h in b if removed[h] > 0]}


def _modify_report(mod: Modification, call: Call) -> dict[str, Any]:
    if call.response is None:
        before = call.backend
        after = dataclasses.replace(before, headers=list(before.headers))
        apply_to_request(mod, after)
        return {
            "kind": "modify",
            "applies_to": "backend request",
            "method": [before.method, after.method],
            "uri": [before.uri(), after.uri()],
            "headers": _headers_report(before.headers, after.headers),
            "body": _body_report(before.body or b"", after.body or b""),
        }
    response = call.response
    changed = dataclasses.replace(response, headers=list(response.headers))
    apply_to_response(mod, changed)
    return {
        "kind": "modify",
        "applies_to": "client response",
        "status": [response.status, changed.status],
        "headers": _headers_report(response.headers, changed.headers),
        "body": _body_report(response.body or b"", changed.body or b""),
    }


def _reply_report(reply: Reply) -> dict[str, Any]:
    text = _text_or_none(reply.body)
    return {"status": reply.status, "headers": _header_lines(reply.headers),
            "body": text if text is not None else f"(binary body: {len(reply.body)} bytes)"}


def _terminate_report(term: Termination, setup: Setup) -> dict[str, Any]:
    """The client response of a terminate, rendered as the gateway renders it (gateway/app.py, §4.4, §6.2)."""
    if term.body is None:
        reply = render_termination_message(term.code, term.message, setup.endpoint,
                                           use_error_set=setup.plan.enable_error_set, extra_headers=list(term.headers))
    else:
        reply = Reply(term.code, terminate_headers(term), term.body)
    return {"kind": "terminate", **_reply_report(reply)}


def _failure_report(failure: FunctionFailure, setup: Setup) -> dict[str, Any]:
    reply = render_error(failure, setup.endpoint, use_error_set=setup.plan.enable_error_set)
    report: dict[str, Any] = {"kind": "error", "errorName": failure.error_name, "message": failure.error_message,
                              "failSafe": setup.plan.fail_safe, **_reply_report(reply)}
    if setup.plan.fail_safe:
        report["note"] = "failSafe: true: the gateway would carry on unchanged (verdict error, §5.4)"
    return report


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def _describe_processor(setup: Setup) -> dict[str, Any]:
    plan, conn = setup.plan, setup.plan.connection
    if isinstance(conn, AwsLambdaConnection):
        function = conn.function_arn
    elif isinstance(conn, HttpConnection):
        function = conn.url
    elif isinstance(conn, PythonConnection):
        function = conn.handler
    else:  # pragma: no cover - the plan knows three stacks
        function = repr(conn)
    return {"serviceId": plan.service_id, "endpointId": plan.endpoint_id, "point": plan.point.value,
            "stack": plan.stack.value, "function": function, "synchronicity": plan.mode.value,
            "failSafe": plan.fail_safe, "deadlineSeconds": plan.deadline_s}


def _raw_output(outcome: Outcome) -> dict[str, Any]:
    if outcome.result is None:
        return {"outcome": "failed", "elapsedMs": round(outcome.elapsed_ms, 1), "body": None}
    result = outcome.result
    report: dict[str, Any] = {"outcome": result.kind.value, "elapsedMs": round(outcome.elapsed_ms, 1),
                              "body": result.body.decode("utf-8", errors="replace")}
    if result.kind is ResultKind.FUNCTION_ERROR:
        report["functionError"] = result.function_error
    return report


def _report(args: argparse.Namespace) -> dict[str, Any]:
    setup = _setup(args)
    sample = _sample_request(args)
    call = _build_call(args, setup, sample)
    _gateway_notes(setup, call)
    routing = call.backend if setup.plan.expand_routing else None
    try:
        payload = build_input(setup.plan, call.call, routing=routing, response=call.response)
    except ClientError as err:
        raise UsageError(f"the gateway cannot build the input: {err.error_name}: {err.error_message}") from None
    input_doc = json.loads(payload)
    outcome = asyncio.run(_invoke(setup.plan, setup.settings, payload, call.call.message_id))
    verdict, failure, reason = _classify(outcome, setup)

    point_name = setup.plan.point.input_name
    validation: dict[str, Any] = {"input": _schema_report(input_doc, input_schema(), "sidecar-input")}
    output_doc: Any = None
    if outcome.result is not None and outcome.result.kind is ResultKind.OUTPUT:
        try:
            output_doc = json.loads(outcome.result.body)
        except ValueError:
            output_doc = None
        else:
            validation["output"] = _schema_report(output_doc, output_schema(point_name), f"sidecar-output {point_name}")
    interpreter_valid = verdict is not None
    validation["interpreter"] = {"valid": interpreter_valid, "error": reason,
                                 "applicable": outcome.result is not None
                                 and outcome.result.kind is ResultKind.OUTPUT}
    schema_valid = validation.get("output", {}).get("valid") is not False
    valid = interpreter_valid and schema_valid
    validation["valid"] = valid

    if verdict is None:
        assert failure is not None
        effect = _failure_report(failure, setup)
    elif verdict.kind is VerdictKind.TERMINATE and verdict.termination is not None:
        effect = _terminate_report(verdict.termination, setup)
    elif verdict.kind is VerdictKind.MODIFY and verdict.modification is not None:
        effect = _modify_report(verdict.modification, call)
    else:
        effect = {"kind": "allow"}
    if verdict is not None and verdict.cache_ttl_ms is not None:
        effect["cacheTtlMs"] = verdict.cache_ttl_ms
    return {
        "processor": _describe_processor(setup),
        "notes": setup.notes,
        "input": input_doc,
        "output": _raw_output(outcome),
        "validation": validation,
        "verdict": effect,
        "exitCode": EXIT_OK if valid else EXIT_INVALID,
    }


def _print_text(report: dict[str, Any], out: TextIO) -> None:
    def section(title: str) -> None:
        print(f"\n== {title} {_RULE[: max(0, 96 - len(title))]}", file=out)

    proc = report["processor"]
    print(f"invoke {proc['point']}-processor of {proc['serviceId']}/{proc['endpointId']}: stack {proc['stack']}, "
          f"{proc['function']} ({proc['synchronicity']}, failSafe {str(proc['failSafe']).lower()}, "
          f"deadline {proc['deadlineSeconds']:g} s)", file=out)
    for note in report["notes"]:
        print(f"note: {note}", file=out)
    section("input")
    print(json.dumps(report["input"], indent=JSON_INDENT, ensure_ascii=False), file=out)
    output = report["output"]
    section(f"raw output ({output['outcome']}, {output['elapsedMs']} ms)")
    if output.get("functionError"):
        print(f"X-Amz-Function-Error: {output['functionError']}", file=out)
    print(output["body"] if output["body"] else "(none)", file=out)

    section("validation")
    validation = report["validation"]
    interp = validation["interpreter"]
    if not interp["applicable"]:
        print("interpreter (§4.3): not applicable (no output to validate)", file=out)
    elif interp["valid"]:
        print("interpreter (§4.3): valid", file=out)
    else:
        print(f"interpreter (§4.3): INVALID: {interp['error']}", file=out)
    for key in ("output", "input"):
        entry = validation.get(key)
        if entry is None:
            continue
        state = "skipped (" + entry["skipped"] + ")" if entry.get("skipped") else (
            "valid" if entry["valid"] else "INVALID")
        print(f"schema {entry['schema']}: {state}", file=out)
        for line in entry["errors"]:
            print(f"  - {line}", file=out)

    verdict = report["verdict"]
    section(f"verdict: {verdict['kind'].upper()}")
    _print_verdict(verdict, out)
    section("result")
    print("valid output (exit 0)" if report["exitCode"] == EXIT_OK
          else "invalid output or failed invocation (exit 1)", file=out)


def _print_verdict(verdict: dict[str, Any], out: TextIO) -> None:
    kind = verdict["kind"]
    if kind == "allow":
        print("allow: the call continues unchanged", file=out)
    elif kind == "modify":
        print(f"modify the {verdict['applies_to']}", file=out)
        if "status" in verdict:
            before, after = verdict["status"]
            print(f"status: {before}" + (f" -> {after}" if after != before else " (unchanged)"), file=out)
        if "method" in verdict and verdict["method"][0] != verdict["method"][1]:
            print(f"method: {verdict['method'][0]} -> {verdict['method'][1]}", file=out)
        if "uri" in verdict and verdict["uri"][0] != verdict["uri"][1]:
            print(f"uri: {verdict['uri'][0]} -> {verdict['uri'][1]}", file=out)
        headers = verdict["headers"]
        print("headers added/dropped:", file=out)
        for line in headers["removed"]:
            print(f"  - {line}", file=out)
        for line in headers["added"]:
            print(f"  + {line}", file=out)
        if not headers["removed"] and not headers["added"]:
            print("  (none)", file=out)
        print("headers before:", file=out)
        for line in headers["before"]:
            print(f"    {line}", file=out)
        print("headers after:", file=out)
        for line in headers["after"]:
            print(f"    {line}", file=out)
        body = verdict["body"]
        if body["changed"]:
            print(f"body ({body['bytesBefore']} -> {body['bytesAfter']} bytes):", file=out)
            print(body["diff"].rstrip("\n"), file=out)
        else:
            print("body: unchanged", file=out)
    else:
        if kind == "error":
            print(f"{verdict['errorName']}: {verdict['message']}", file=out)
            if verdict.get("note"):
                print(verdict["note"], file=out)
            print("the client would get:", file=out)
        print(f"status: {verdict['status']}", file=out)
        for line in verdict["headers"]:
            print(f"  {line}", file=out)
        print(f"body: {verdict['body']}", file=out)
    if "cacheTtlMs" in verdict:
        print(f"idempotence hint (§9.1): cacheable for {verdict['cacheTtlMs']} ms", file=out)


def run(args: argparse.Namespace) -> int:
    """Run ``invoke``; returns the exit status (0 valid, 1 invalid or failed, 2 usage/configuration)."""
    try:
        report = _report(args)
    except UsageError as exc:
        print(f"sidecar-gateway invoke: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(report, indent=JSON_INDENT, ensure_ascii=False))
    else:
        _print_text(report, sys.stdout)
    return int(report["exitCode"])

