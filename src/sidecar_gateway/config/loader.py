"""The YAML configuration loader: file text in, ``GatewayPlan`` plus every problem out.

Rules of this file:

* The loader never raises on bad input.  Every failure is a ``Problem``; ``LoadResult.unreadable`` marks the
  ones that stop us before validation (file cannot be read, not UTF-8, YAML syntax error), which ``check``
  answers with exit status 2 (gateway-config.md).
* Every problem is reported, not only the first (contract §2.2).  Problems outside processor texts are
  ``Problem(ERROR, key=<YAML path>, message)``, e.g. ``services[0].endpoints[1].target: Invalid URL``.
* Problems come out in file order.  Each one is placed at a position of the YAML node tree (the node it
  names, the key for an unknown or repeated key, the enclosing mapping for a missing key); the processor
  problems of an endpoint are placed at the end of that endpoint's mapping, after its own YAML problems.
* The plan is built only when there is no ERROR; it is frozen (``plan.py``) and holds every derived value.

Theory of operation:

1. ``_parse_yaml`` composes the node tree with the safe loader, records the position of every path and
   reports repeated mapping keys (PyYAML would silently keep the last one), then constructs plain data.
2. The whole document is validated against ``schema.GatewayFileSpec``; pydantic collects all errors, which
   ``_translate`` turns into problem lines ("Unknown key", "Required", "Invalid value: <expected>" or the
   validator's own message).
3. Cross-checks that span several nodes run on the raw data, so they work even where a sibling is invalid:
   duplicate service/endpoint/application ids and package keys, repeated ``error_set`` statuses, header
   names, identical routes, ``listen`` = ``admin.listen``.
4. Processor texts are compiled by ``processor.compile_processor`` with the sidecar settings (built first,
   defaults when the ``sidecar`` block is invalid) and each endpoint's timeout; then the timeout sum is checked.
5. Without ERROR, ``_build_plan`` copies the validated models into the frozen plan.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import Point
from .plan import (
    Application,
    EndpointPlan,
    ErrorFormat,
    ErrorSetEntry,
    GatewayPlan,
    KeyLocation,
    PackageKey,
    ProcessorPlan,
    SidecarSettings,
)
from .problems import Level, Problem, has_errors
from .processor import check_timeout_sum, compile_processor
from .schema import (
    ADMIN_TOKEN_REQUIRED,
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_LISTEN,
    DEFAULT_TIMEOUT_S,
    GATEWAY_ERROR_TYPE,
    AdminSpec,
    EndpointSpec,
    GatewayFileSpec,
    SidecarSpec,
    is_header_token,
    is_loopback_host,
)

__all__ = ["LoadResult", "load_config", "load_config_text"]

_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Default key locations (gateway-config.md "Keys"): query api_key with the alias apikey; header X-Api-Key.
_QUERY_KEY_NAMES = ("api_key", "apikey")
_HEADER_KEY_NAMES = ("x-api-key",)

# Messages of pydantic's own error types, as "Invalid value: <expected>".
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "finite_number": "a finite number",
    "too_short": "a non-empty list",
    "string_too_short": "a non-empty string",
}

Position = tuple[int, int]  # (line, column), 0-based, as PyYAML marks


@dataclass(frozen=True)
class LoadResult:
    plan: GatewayPlan | None  # None when there is any ERROR or the file is unreadable
    problems: list[Problem]  # every problem, in file order
    unreadable: bool  # True when the file cannot be read or parsed as YAML (exit status 2)


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> LoadResult:
    """Read and load the configuration file at ``path``."""
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        return _unreadable(source, exc.strerror or str(exc))
    except ValueError as exc:  # e.g. a NUL byte in the path
        return _unreadable(source, str(exc))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _unreadable(source, f"Not UTF-8 text (byte {exc.start}: {exc.reason})")
    return load_config_text(text, source=source, environ=environ)


def load_config_text(text: str, *, source: str = "<string>", environ: Mapping[str, str] | None = None) -> LoadResult:
    """Load configuration text; ``source`` names it in the plan and in unreadable-file problems."""
    try:
        document = _parse_yaml(text)
    except Exception as exc:  # a YAML error, or anything the parser raises on hostile input
        return _unreadable(source, _yaml_reason(exc))
    loader = _Loader(source, document, os.environ if environ is None else environ)
    try:
        return loader.run()
    except Exception as exc:  # a bug must still end as a problem line, never as a traceback
        problem = Problem(Level.ERROR, source, f"Internal error while loading the configuration: {exc!r}")
        return LoadResult(None, [*loader.sorted_problems(), problem], unreadable=False)


def _unreadable(source: str, reason: str) -> LoadResult:
    return LoadResult(None, [Problem(Level.ERROR, source, reason)], unreadable=True)


def _yaml_reason(exc: Exception) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        if mark is not None:
            return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {what}"
        return f"YAML syntax error: {what}"
    if isinstance(exc, yaml.YAMLError):
        return f"YAML syntax error: {' '.join(str(exc).split())}"
    return f"YAML cannot be read: {exc!r}"


# ---------------------------------------------------------------------------------------------------------------
# YAML with positions
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Document:
    data: Any
    starts: dict[str, Position] = field(default_factory=dict)  # path -> start of its value node
    ends: dict[str, Position] = field(default_factory=dict)  # path -> end of its value node
    keys: dict[str, Position] = field(default_factory=dict)  # path -> start of its key node
    duplicates: list[tuple[str, Position]] = field(default_factory=list)  # repeated mapping keys


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _parse_yaml(text: str) -> _Document:
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()
    document = _Document(data)
    if node is not None:
        _record(node, "", document, set())
    return document


def _record(node: yaml.Node, path: str, document: _Document, expanded: set[int]) -> None:
    # Assignment, not setdefault: for a repeated key the last value is the one PyYAML keeps and we validate.
    document.starts[path] = (node.start_mark.line, node.start_mark.column)
    document.ends[path] = (node.end_mark.line, node.end_mark.column)
    if id(node) in expanded:  # an alias: its content was walked once already (also stops alias bombs)
        return
    expanded.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record(item, _child(path, index), document, expanded)
    elif isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            child = _child(path, key_node.value)
            if key_node.value in seen:
                document.duplicates.append((child, (key_node.start_mark.line, key_node.start_mark.column)))
            seen.add(key_node.value)
            document.keys.setdefault(child, (key_node.start_mark.line, key_node.start_mark.column))
            _record(value_node, child, document, expanded)


# ---------------------------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------------------------

_LAST_PART = re.compile(r"(?:\.[^.\[\]]*|\[\d+\])$")


def _parent(path: str) -> str | None:
    if not path:
        return None
    stripped = _LAST_PART.sub("", path)
    if stripped != path:
        return stripped
    return ""  # a top-level key


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class _Processors:
    pre: ProcessorPlan | None = None
    post: ProcessorPlan | None = None


class _Loader:
    """One load: collects (position, problem) pairs, then sorts them into file order."""

    def __init__(self, source: str, document: _Document, environ: Mapping[str, str]) -> None:
        self.source = source
        self.document = document
        self.environ = environ
        self._problems: list[tuple[Position, int, int, Problem]] = []  # (position, phase, sequence, problem)

    # -- problem bookkeeping ------------------------------------------------------------------------------

    def _position(self, path: str, *, key: bool = False) -> Position:
        if key and path in self.document.keys:
            return self.document.keys[path]
        current: str | None = path
        while current is not None:
            if current in self.document.starts:
                return self.document.starts[current]
            current = _parent(current)
        return (0, 0)

    def error(self, path: str, message: str, *, at_key: bool = False) -> None:
        self._add(self._position(path, key=at_key), 0, Problem(Level.ERROR, path, message))

    def _add(self, position: Position, phase: int, problem: Problem) -> None:
        self._problems.append((position, phase, len(self._problems), problem))

    def sorted_problems(self) -> list[Problem]:
        return [problem for *_, problem in sorted(self._problems, key=lambda item: item[:3])]

    # -- the steps ----------------------------------------------------------------------------------------

    def run(self) -> LoadResult:
        data = self.document.data
        for path, position in self.document.duplicates:
            self._add(position, 0, Problem(Level.ERROR, path, "Duplicate key"))
        if not isinstance(data, dict):
            self.error(self.source, "Invalid value: the top level must be a mapping")
            return LoadResult(None, self.sorted_problems(), unreadable=False)

        spec: GatewayFileSpec | None = None
        try:
            spec = GatewayFileSpec.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                self._translate(err, data)

        self._cross_check(data)
        if spec is not None and spec.admin is not None and spec.admin.listen == spec.listen and spec.listen[1] != 0:
            self.error("admin.listen", "Invalid value: an address different from listen")
        self._check_admin_token(data.get("admin"))
        settings = self._settings(data.get("sidecar"))
        processors = self._compile_processors(data, settings)

        problems = self.sorted_problems()
        if spec is None or has_errors(problems):
            return LoadResult(None, problems, unreadable=False)
        return LoadResult(self._build_plan(spec, settings, processors), problems, unreadable=False)

    def _translate(self, err: Any, data: Any) -> None:
        loc = tuple(err["loc"])
        on_key = bool(loc) and loc[-1] == "[key]"
        path = self._render(loc[:-1] if on_key else loc, data)
        kind = err["type"]
        if kind in ("extra_forbidden", "invalid_key"):
            self.error(path, "Unknown key", at_key=True)
        elif kind == "missing":
            self.error(path, "Required")
        elif kind == GATEWAY_ERROR_TYPE:
            self.error(path, str(err["ctx"]["message"]), at_key=on_key)
        elif kind == "literal_error":
            self.error(path, f"Invalid value: {str(err['ctx']['expected']).replace(chr(39), '')}", at_key=on_key)
        elif kind in _EXPECTED:
            self.error(path, f"Invalid value: {_EXPECTED[kind]}", at_key=on_key)
        else:
            self.error(path, f"Invalid value: {err['msg']}", at_key=on_key)

    @staticmethod
    def _render(loc: tuple[Any, ...], data: Any) -> str:
        """A pydantic location as a YAML path: ``services[0].endpoints[1].error_set.403``."""
        path, node = "", data
        for part in loc:
            if isinstance(node, list) and isinstance(part, int):
                path = _child(path, part)
                node = node[part] if 0 <= part < len(node) else None
            else:
                path = _child(path, str(part))
                node = node.get(part) if isinstance(node, dict) else None
        return path

    # -- cross-checks on raw data -------------------------------------------------------------------------

    def _endpoints(self, data: dict[Any, Any]) -> Iterator[tuple[str, dict[Any, Any], dict[Any, Any]]]:
        """(path, service, endpoint) for every endpoint that is a mapping inside a service that is one."""
        for i, service in enumerate(_items(data.get("services"))):
            if not isinstance(service, dict):
                continue
            for j, endpoint in enumerate(_items(service.get("endpoints"))):
                if isinstance(endpoint, dict):
                    yield f"services[{i}].endpoints[{j}]", service, endpoint

    def _check_admin_token(self, raw: Any) -> None:
        """The admin listener off loopback needs a bearer token (/metrics and /readyz must not be open to the
        network).  Checked on the ``admin`` block alone, so it is reported even when other parts are invalid."""
        if not isinstance(raw, dict):
            return
        try:
            admin = AdminSpec.model_validate(raw)
        except ValidationError:
            return  # reported by the whole-file validation
        if admin.token is None and not is_loopback_host(admin.listen[0]):
            self.error("admin.token", ADMIN_TOKEN_REQUIRED)

    def _cross_check(self, data: dict[Any, Any]) -> None:
        self._unique(
            ((f"services[{i}].id", _text(_mapping(s).get("id"))) for i, s in enumerate(_items(data.get("services")))),
            "Duplicate service id",
        )
        self._unique(
            ((f"{path}.id", _text(ep.get("id"))) for path, _, ep in self._endpoints(data)), "Duplicate endpoint id"
        )
        applications = list(enumerate(_items(data.get("applications"))))
        self._unique(
            ((f"applications[{i}].id", _text(_mapping(app).get("id"))) for i, app in applications),
            "Duplicate application id",
        )
        self._unique(
            (
                (f"applications[{i}].package_keys[{k}].key", _text(_mapping(pk).get("key")))
                for i, app in applications
                for k, pk in enumerate(_items(_mapping(app).get("package_keys")))
            ),
            "Duplicate package key",
        )
        routes: dict[tuple[str | None, str], list[tuple[frozenset[str] | None, str]]] = {}
        for path, _, endpoint in self._endpoints(data):
            self._check_endpoint(path, endpoint, routes)

    def _unique(self, entries: Iterator[tuple[str, str | None]], message: str) -> None:
        seen: set[str] = set()
        for path, value in entries:
            if value is None:
                continue
            if value in seen:
                self.error(path, message)
            seen.add(value)

    def _check_endpoint(
        self,
        path: str,
        endpoint: dict[Any, Any],
        routes: dict[tuple[str | None, str], list[tuple[frozenset[str] | None, str]]],
    ) -> None:
        # Keys spelled alike (403 and '403') were reported as "Duplicate key" by the YAML walk already.
        statuses: set[int] = set()
        spellings: set[str] = set()
        for status in _mapping(endpoint.get("error_set")):
            text = str(status).strip()
            if text.isascii() and text.isdigit():
                if int(text) in statuses and str(status) not in spellings:
                    self.error(_child(f"{path}.error_set", str(status)), "Duplicate status", at_key=True)
                statuses.add(int(text))
            spellings.add(str(status))
        api_key = _mapping(endpoint.get("api_key"))
        name = _text(api_key.get("name"))
        if api_key.get("in") == "header" and name is not None and name.strip() and not is_header_token(name):
            self.error(f"{path}.api_key.name", "Invalid value: a header name (RFC 9110 token)")
        # Identical routes: same host and path, overlapping methods.  Method-based routing (gateway-config.md
        # "Matching") needs the methods of endpoints sharing a public_path to be disjoint.
        spec = _validated_endpoint(endpoint)
        if spec is None:
            return
        methods = frozenset(spec.methods) if spec.methods is not None else None
        taken = routes.setdefault((spec.public_host, spec.public_path), [])
        for other_methods, other_path in taken:
            if methods is None or other_methods is None or methods & other_methods:
                self.error(
                    f"{path}.public_path",
                    f"Duplicate route: same public_host, public_path and methods as {other_path}",
                )
                break
        taken.append((methods, path))

    # -- sidecar settings and processors ------------------------------------------------------------------

    @staticmethod
    def _settings(raw: Any) -> SidecarSettings:
        """Contract §9.7.  An invalid block was reported by the whole-file validation; defaults are used so
        processor texts can still be checked."""
        try:
            spec = SidecarSpec.model_validate(raw if raw is not None else {})
        except ValidationError:
            return SidecarSettings()
        defaults = SidecarSettings()
        aws, cache, nonblocking, python = spec.aws, spec.output_cache, spec.nonblocking, spec.python
        return SidecarSettings(
            allowed_role_prefixes=tuple(spec.allowed_role_prefixes or ()),
            ssm_cache_ttl_s=aws.ssm_cache_ttl_s if aws else defaults.ssm_cache_ttl_s,
            output_cache_local_entries=cache.local_entries if cache else defaults.output_cache_local_entries,
            output_cache_redis_url=cache.redis_url if cache else defaults.output_cache_redis_url,
            output_cache_max_ttl_s=cache.max_ttl_s if cache else defaults.output_cache_max_ttl_s,
            output_cache_redis_timeout_ms=cache.redis_timeout_ms if cache else defaults.output_cache_redis_timeout_ms,
            nonblocking_queue_size=nonblocking.queue_size if nonblocking else defaults.nonblocking_queue_size,
            nonblocking_workers=nonblocking.workers if nonblocking else defaults.nonblocking_workers,
            nonblocking_drain_s=nonblocking.drain_s if nonblocking else defaults.nonblocking_drain_s,
            python_max_threads=python.max_threads if python else defaults.python_max_threads,
        )

    def _compile_processors(self, data: dict[Any, Any], settings: SidecarSettings) -> dict[str, _Processors]:
        """Compile every processor text, endpoint by endpoint, even where the endpoint has YAML problems, so
        ``check`` reports everything at once.  Returns the compiled plans by endpoint path."""
        compiled: dict[str, _Processors] = {}
        for path, service, endpoint in self._endpoints(data):
            texts = {
                Point.PRE: _text(endpoint.get("pre_processing")),
                Point.POST: _text(endpoint.get("post_processing")),
            }
            if not any(text is not None and text.strip() for text in texts.values()):
                continue
            end = self.document.ends.get(path, (0, 0))
            service_id = _text(service.get("id")) or "?"
            endpoint_id = _text(endpoint.get("id")) or "?"
            timeout_s = _raw_timeout(endpoint.get("timeout", DEFAULT_TIMEOUT_S))
            compiled_by_point: dict[Point, ProcessorPlan | None] = {}
            for point, text in texts.items():
                if text is None or not text.strip():  # a blank text means "no processor"
                    continue
                plan, problems = self._compile_one(
                    text, point, path, service_id, endpoint_id, timeout_s or DEFAULT_TIMEOUT_S, settings
                )
                compiled_by_point[point] = plan
                for problem in problems:
                    self._add(end, -1, problem)
            plans = _Processors(pre=compiled_by_point.get(Point.PRE), post=compiled_by_point.get(Point.POST))
            if timeout_s is not None:  # an invalid endpoint timeout is reported already; no sum to check
                for problem in self._check_sum(plans, path, service_id, endpoint_id, timeout_s):
                    self._add(end, -1, problem)
            compiled[path] = plans
        return compiled

    def _compile_one(
        self,
        text: str,
        point: Point,
        path: str,
        service_id: str,
        endpoint_id: str,
        timeout_s: float,
        settings: SidecarSettings,
    ) -> tuple[ProcessorPlan | None, list[Problem]]:
        try:
            return compile_processor(
                text,
                point=point,
                service_id=service_id,
                endpoint_id=endpoint_id,
                endpoint_timeout_s=timeout_s,
                settings=settings,
                environ=self.environ,
            )
        except Exception as exc:  # the processor compiler must not take the loader down
            key = f"{path}.{point.value}_processing"
            return None, [Problem(Level.ERROR, key, f"Processor configuration cannot be compiled: {exc!r}")]

    @staticmethod
    def _check_sum(plans: _Processors, path: str, service_id: str, endpoint_id: str, timeout_s: float) -> list[Problem]:
        try:
            return check_timeout_sum(
                plans.pre, plans.post, endpoint_timeout_s=timeout_s, service_id=service_id, endpoint_id=endpoint_id
            )
        except Exception as exc:
            return [Problem(Level.ERROR, f"{path}.timeout", f"Processor timeouts cannot be checked: {exc!r}")]

    # -- the plan -----------------------------------------------------------------------------------------

    def _build_plan(
        self, spec: GatewayFileSpec, settings: SidecarSettings, processors: dict[str, _Processors]
    ) -> GatewayPlan:
        admin_host, admin_port = spec.admin.listen if spec.admin else DEFAULT_ADMIN_LISTEN
        endpoints: list[EndpointPlan] = []
        for i, service in enumerate(spec.services or ()):
            for j, endpoint in enumerate(service.endpoints or ()):
                compiled = processors.get(f"services[{i}].endpoints[{j}]", _Processors())
                endpoints.append(_endpoint_plan(service.id, service.name, endpoint, compiled))
        keys: dict[str, PackageKey] = {}
        for app_spec in spec.applications or ():
            application = Application(id=app_spec.id, name=app_spec.name or "", eavs=_eavs(app_spec.eavs))
            for key_spec in app_spec.package_keys or ():
                keys[key_spec.key] = PackageKey(
                    key=key_spec.key,
                    application=application,
                    eavs=_eavs(key_spec.eavs),
                    active=key_spec.status == "active",
                )
        listen_host, listen_port = spec.listen if spec.listen else DEFAULT_LISTEN
        return GatewayPlan(
            source=self.source,
            listen_host=listen_host,
            listen_port=listen_port,
            admin_host=admin_host,
            admin_port=admin_port,
            admin_token=spec.admin.token if spec.admin else None,
            trusted_proxies=tuple(spec.trusted_proxies or ()),
            max_request_body=spec.max_request_body,
            max_inflight=spec.max_inflight,
            endpoints=tuple(endpoints),
            keys=MappingProxyType(keys),
            sidecar=settings,
        )


def _validated_endpoint(raw: dict[Any, Any]) -> EndpointSpec | None:
    try:
        return EndpointSpec.model_validate(raw)
    except ValidationError:
        return None


def _raw_timeout(value: Any) -> float | None:
    """The endpoint timeout for processor compilation, or None when it is invalid (reported elsewhere)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def _eavs(values: Mapping[str, str | None] | None) -> Mapping[str, str]:
    """A blank EAV counts as absent (contract §1): blank and null values are dropped."""
    kept = {name: value for name, value in (values or {}).items() if value is not None and value.strip()}
    return MappingProxyType(kept)


def _endpoint_plan(
    service_id: str, service_name: str | None, spec: EndpointSpec, processors: _Processors
) -> EndpointPlan:
    api_key = spec.api_key
    if api_key is not None and api_key.in_ == "header":
        location = KeyLocation(in_header=True, names=(api_key.name.lower(),) if api_key.name else _HEADER_KEY_NAMES)
    else:
        name = api_key.name if api_key is not None else None
        location = KeyLocation(in_header=False, names=(name,) if name else _QUERY_KEY_NAMES)
    error_set = {
        status: ErrorSetEntry(
            body=entry.body,
            content_type=entry.content_type,
            status_message=entry.status_message,
            detail_header=entry.detail_header,
        )
        for status, entry in (spec.error_set or {}).items()
    }
    return EndpointPlan(
        service_id=service_id,
        endpoint_id=spec.id,
        public_path=spec.public_path,
        target=spec.target,
        service_name=service_name or "",
        name=spec.name or "",
        public_host=spec.public_host,
        methods=frozenset(spec.methods) if spec.methods is not None else None,
        timeout_s=spec.timeout,
        key_location=location,
        key_required=spec.key_required,
        error_format=ErrorFormat(spec.error_format),
        error_set=MappingProxyType(error_set),
        route_hosts=frozenset(spec.route_hosts or ()) | {spec.target.authority},
        pre=processors.pre,
        post=processors.post,
    )
