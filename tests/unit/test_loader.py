"""The YAML configuration loader (gateway-config.md "Configuration file", contract §2.2 problem lines)."""

from __future__ import annotations

import copy
import ipaddress
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar_gateway.config.loader import LoadResult, load_config, load_config_text
from sidecar_gateway.config.plan import (
    EndpointPlan,
    ErrorFormat,
    ErrorSetEntry,
    GatewayPlan,
    KeyLocation,
    SidecarSettings,
    Target,
)
from sidecar_gateway.config.problems import Level
from sidecar_gateway.errors import Point

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FULL_EXAMPLE = CONFIGS / "full-example.yaml"

LAMBDA_ARN = "arn:aws:lambda:us-east-1:123456789012:function:orders-sidecar"
NO_ROLE_PROCESSOR = f"region: us-east-1\nfunctionARN: {LAMBDA_ARN}\nuseAssumeRole: false\n"

BASE: dict[str, Any] = {
    "services": [
        {
            "id": "svc",
            "endpoints": [{"id": "ep", "public_path": "/p", "target": "http://backend:9000/b"}],
        }
    ]
}


def config(*, endpoint: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """The minimal valid configuration, with ``endpoint`` keys merged into its one endpoint and ``top`` keys
    set at the top level (a value of None removes the key)."""
    data = copy.deepcopy(BASE)
    for key, value in (endpoint or {}).items():
        if value is None:
            data["services"][0]["endpoints"][0].pop(key, None)
        else:
            data["services"][0]["endpoints"][0][key] = value
    for key, value in top.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def load(data: dict[str, Any] | str, environ: dict[str, str] | None = None) -> LoadResult:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    return load_config_text(text, source="gw.yaml", environ={} if environ is None else environ)


def lines(result: LoadResult) -> list[str]:
    return [problem.render() for problem in result.problems]


def plan_of(data: dict[str, Any] | str, environ: dict[str, str] | None = None) -> GatewayPlan:
    result = load(data, environ)
    assert result.problems == [], lines(result)
    assert result.plan is not None
    return result.plan


def only_endpoint(data: dict[str, Any] | str) -> EndpointPlan:
    (endpoint,) = plan_of(data).endpoints
    return endpoint


# ---------------------------------------------------------------------------------------------------------------
# The documented example
# ---------------------------------------------------------------------------------------------------------------


def test_full_example_of_gateway_config_loads_without_problems() -> None:
    """The complete example of gateway-config.md is valid and compiles both processors (no network needed)."""
    result = load_config(FULL_EXAMPLE, environ={})
    assert (lines(result), result.unreadable) == ([], False)
    plan = result.plan
    assert plan is not None
    assert plan.source == str(FULL_EXAMPLE)
    assert (plan.listen_host, plan.listen_port, plan.admin_host, plan.admin_port) == (
        "127.0.0.1",
        8080,
        "127.0.0.1",
        9901,
    )
    assert plan.trusted_proxies == ()
    assert plan.max_request_body == 50 * 1024 * 1024
    assert plan.sidecar == SidecarSettings()
    (endpoint,) = plan.endpoints
    assert endpoint.service_id == "0123456789"
    assert endpoint.endpoint_id == "9876543210"
    assert (endpoint.service_name, endpoint.name) == ("Acme orders", "create order")
    assert endpoint.public_path == "/my/op"
    assert endpoint.public_host == "api.acme.com"
    assert endpoint.methods == frozenset({"GET", "POST"})
    assert endpoint.target == Target("http", "127.0.0.1", 9000, "/backend/op", "")
    assert endpoint.timeout_s == 30.0
    assert endpoint.key_location == KeyLocation(in_header=False, names=("api_key",))
    assert endpoint.key_required is True
    assert endpoint.error_format is ErrorFormat.XML
    assert dict(endpoint.error_set) == {403: ErrorSetEntry('{"error":"forbidden"}', "application/json")}
    assert endpoint.route_hosts == frozenset({"127.0.0.1:9000"})
    assert endpoint.pre is not None and endpoint.pre.point is Point.PRE
    assert endpoint.pre.service_id == "0123456789" and endpoint.pre.endpoint_id == "9876543210"
    assert endpoint.post is not None and endpoint.post.point is Point.POST
    key = plan.keys["abc123def456ghi789"]
    assert key.active is True
    assert dict(key.eavs) == {"pkg_eav": "eav_value"}
    assert (key.application.id, key.application.name) == ("app-1", "Acme mobile")
    assert dict(key.application.eavs) == {"eav1": "eav_value"}


def test_minimal_file_gets_the_documented_defaults() -> None:
    """Everything but the endpoint's id, public_path and target has a default."""
    plan = plan_of(config())
    assert (plan.listen_host, plan.listen_port) == ("127.0.0.1", 8080)
    assert (plan.admin_host, plan.admin_port, plan.admin_token) == ("127.0.0.1", 9901, None)
    assert plan.max_request_body == 52_428_800
    assert dict(plan.keys) == {}
    (endpoint,) = plan.endpoints
    assert endpoint.public_host is None and endpoint.methods is None
    assert endpoint.timeout_s == 30.0
    assert endpoint.key_location == KeyLocation(in_header=False, names=("api_key", "apikey"))
    assert endpoint.key_required is True
    assert endpoint.error_format is ErrorFormat.XML
    assert dict(endpoint.error_set) == {}
    assert endpoint.route_hosts == frozenset({"backend:9000"})
    assert endpoint.pre is None and endpoint.post is None
    assert (endpoint.service_name, endpoint.name) == ("", "")


def test_empty_services_is_a_valid_gateway_without_endpoints() -> None:
    """A file of only top-level settings loads; every request will be 404."""
    assert plan_of("listen: 0.0.0.0:80\n").endpoints == ()


# ---------------------------------------------------------------------------------------------------------------
# Validation lines
# ---------------------------------------------------------------------------------------------------------------

EP = "services[0].endpoints[0]"
METHODS = "CONNECT, DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE"

ENDPOINT_CASES = [
    ({"target": "ftp://backend/x"}, f"{EP}.target: Invalid URL"),
    ({"target": "http://user:secret@backend/x"}, f"{EP}.target: Invalid URL"),
    ({"target": "http://backend/x#frag"}, f"{EP}.target: Invalid URL"),
    ({"target": "/relative/path"}, f"{EP}.target: Invalid URL"),
    ({"target": "http://backend:99999/"}, f"{EP}.target: Invalid URL"),
    ({"target": "http://backend:/"}, f"{EP}.target: Invalid URL"),
    ({"target": "http:///nohost"}, f"{EP}.target: Invalid URL"),
    ({"target": "http://back end/"}, f"{EP}.target: Invalid URL"),
    ({"target": "http://[::1/"}, f"{EP}.target: Invalid URL"),
    ({"target": 80}, f"{EP}.target: Invalid URL"),
    ({"target": None}, f"{EP}.target: Required"),
    ({"public_path": "my/op"}, f"{EP}.public_path: Invalid value: a path starting with '/'"),
    ({"public_path": "/a/../b"}, f"{EP}.public_path: Invalid value: a path without spaces, '?', '#' or dot segments"),
    ({"public_path": "/a?x=1"}, f"{EP}.public_path: Invalid value: a path without spaces, '?', '#' or dot segments"),
    ({"public_path": None}, f"{EP}.public_path: Required"),
    ({"id": None}, f"{EP}.id: Required"),
    ({"id": 123}, f"{EP}.id: Invalid value: a string (put numbers in quotes)"),
    ({"id": " "}, f"{EP}.id: Invalid value: a non-empty string without control characters"),
    ({"name": 5}, f"{EP}.name: Invalid value: a string"),
    ({"public_host": "bad host"}, f"{EP}.public_host: Invalid value: a host name"),
    ({"public_host": "api.acme.com:99999"}, f"{EP}.public_host: Invalid value: a host name"),
    ({"methods": ["GET", "FETCH"]}, f"{EP}.methods[1]: Invalid value: an HTTP method ({METHODS})"),
    ({"methods": []}, f"{EP}.methods: Invalid value: a non-empty list"),
    ({"methods": "GET"}, f"{EP}.methods: Invalid value: a list"),
    ({"timeout": 0}, f"{EP}.timeout: Invalid value: a number greater than 0"),
    ({"timeout": -1.5}, f"{EP}.timeout: Invalid value: a number greater than 0"),
    ({"timeout": "30"}, f"{EP}.timeout: Invalid value: a number greater than 0"),
    ({"timeout": True}, f"{EP}.timeout: Invalid value: a number greater than 0"),
    ({"timeout": float("inf")}, f"{EP}.timeout: Invalid value: a number greater than 0"),
    ({"api_key": {"in": "cookie"}}, f"{EP}.api_key.in: Invalid value: query or header"),
    (
        {"api_key": {"in": "header", "name": "x key"}},
        f"{EP}.api_key.name: Invalid value: a header name (RFC 9110 token)",
    ),
    ({"api_key": {"name": ""}}, f"{EP}.api_key.name: Invalid value: a non-empty string"),
    ({"api_key": "header"}, f"{EP}.api_key: Invalid value: a mapping"),
    ({"key_required": "yes please"}, f"{EP}.key_required: Invalid value: true or false"),
    ({"error_format": "yaml"}, f"{EP}.error_format: Invalid value: xml or json"),
    ({"error_set": {700: {"body": "x"}}}, f"{EP}.error_set.700: Invalid value: an HTTP status between 100 and 599"),
    ({"error_set": {99: {"body": "x"}}}, f"{EP}.error_set.99: Invalid value: an HTTP status between 100 and 599"),
    ({"error_set": {"oops": {"body": "x"}}}, f"{EP}.error_set.oops: Invalid value: an HTTP status between 100 and 599"),
    ({"error_set": {403: {"content_type": "text/html"}}}, f"{EP}.error_set.403.body: Required"),
    ({"error_set": {403: {"body": 1}}}, f"{EP}.error_set.403.body: Invalid value: a string"),
    (
        {"error_set": {403: {"body": "x", "detail_header": "a\r\nb"}}},
        f"{EP}.error_set.403.detail_header: Invalid value: a non-empty string without control characters",
    ),
    ({"route_hosts": ["ok.example", "a b"]}, f"{EP}.route_hosts[1]: Invalid value: host[:port]"),
    ({"route_hosts": ["h:0"]}, f"{EP}.route_hosts[0]: Invalid value: host[:port]"),
    ({"route_hosts": ["::1"]}, f"{EP}.route_hosts[0]: Invalid value: host[:port]"),
    ({"pre_processing": ["region: x"]}, f"{EP}.pre_processing: Invalid value: a string"),
]


@pytest.mark.parametrize(("endpoint", "line"), ENDPOINT_CASES, ids=[case[1] for case in ENDPOINT_CASES])
def test_invalid_endpoint_value_yields_one_error_line(endpoint: dict[str, Any], line: str) -> None:
    """Each bad endpoint value is one ERROR line naming its YAML path; there is no plan."""
    result = load(config(endpoint=endpoint))
    assert lines(result) == [f"ERROR   {line}"]
    assert result.plan is None and result.unreadable is False


TOP_CASES = [
    ({"listen": "8080"}, "listen: Invalid value: HOST:PORT"),
    ({"listen": "localhost:"}, "listen: Invalid value: HOST:PORT"),
    ({"listen": ":8080"}, "listen: Invalid value: HOST:PORT"),
    ({"listen": "::1:8080"}, "listen: Invalid value: HOST:PORT"),
    ({"listen": "[::1]"}, "listen: Invalid value: HOST:PORT"),
    ({"listen": "[nope]:80"}, "listen: Invalid value: HOST:PORT"),
    ({"listen": "host:65536"}, "listen: Invalid value: HOST:PORT"),
    ({"listen": 8080}, "listen: Invalid value: HOST:PORT"),
    ({"trusted_proxies": ["10.0.0.0/8", "10.0.0.1/8"]}, "trusted_proxies[1]: Invalid CIDR"),
    ({"trusted_proxies": ["proxy.local"]}, "trusted_proxies[0]: Invalid CIDR"),
    ({"trusted_proxies": "10.0.0.0/8"}, "trusted_proxies: Invalid value: a list"),
    ({"admin": {"listen": "nowhere"}}, "admin.listen: Invalid value: HOST:PORT"),
    ({"admin": {"listen": "127.0.0.1:8080"}}, "admin.listen: Invalid value: an address different from listen"),
    ({"admin": {"token": ""}}, "admin.token: Invalid value: a non-empty string"),
    ({"admin": 9901}, "admin: Invalid value: a mapping"),
    (
        {"max_request_body": 0},
        "max_request_body: Invalid value: a size in bytes greater than 0 (e.g. 52428800 or '50mb')",
    ),
    (
        {"max_request_body": "lots"},
        "max_request_body: Invalid value: a size in bytes greater than 0 (e.g. 52428800 or '50mb')",
    ),
    ({"services": {"id": "svc"}}, "services: Invalid value: a list"),
    ({"services": [{"endpoints": []}]}, "services[0].id: Required"),
    (
        {"sidecar": {"nonblocking": {"workers": 0}}},
        "sidecar.nonblocking.workers: Invalid value: an integer greater than 0",
    ),
    (
        {"sidecar": {"nonblocking": {"queue_size": 1.5}}},
        "sidecar.nonblocking.queue_size: Invalid value: an integer greater than 0",
    ),
    (
        {"sidecar": {"nonblocking": {"drain_s": -1}}},
        "sidecar.nonblocking.drain_s: Invalid value: a number greater than 0",
    ),
    (
        {"sidecar": {"aws": {"ssm_cache_ttl_s": 0}}},
        "sidecar.aws.ssm_cache_ttl_s: Invalid value: a number greater than 0",
    ),
    (
        {"sidecar": {"output_cache": {"redis_url": "http://cache:6379"}}},
        "sidecar.output_cache.redis_url: Invalid value: a redis://, rediss:// or unix:// URL",
    ),
    (
        {"sidecar": {"output_cache": {"redis_timeout_ms": "50"}}},
        "sidecar.output_cache.redis_timeout_ms: Invalid value: an integer greater than 0",
    ),
    (
        {"sidecar": {"output_cache": {"local_entries": True}}},
        "sidecar.output_cache.local_entries: Invalid value: an integer greater than 0",
    ),
    (
        {"sidecar": {"python": {"max_threads": 0}}},
        "sidecar.python.max_threads: Invalid value: an integer greater than 0",
    ),
    ({"sidecar": {"allowed_role_prefixes": "tibco_"}}, "sidecar.allowed_role_prefixes: Invalid value: a list"),
    (
        {"applications": [{"id": "a", "package_keys": [{"key": "k", "status": "paused"}]}]},
        "applications[0].package_keys[0].status: Invalid value: active or disabled",
    ),
    (
        {"applications": [{"id": "a", "package_keys": [{"key": "with space"}]}]},
        "applications[0].package_keys[0].key: Invalid value: a non-empty string without spaces",
    ),
    ({"applications": [{"id": "a", "package_keys": [{}]}]}, "applications[0].package_keys[0].key: Required"),
    ({"applications": [{"id": "a", "eavs": {"tier": ["gold"]}}]}, "applications[0].eavs.tier: Invalid value: a string"),
    ({"applications": [{"id": "a", "eavs": ["tier"]}]}, "applications[0].eavs: Invalid value: a mapping"),
    ({"applications": [{"name": "no id"}]}, "applications[0].id: Required"),
]


@pytest.mark.parametrize(("top", "line"), TOP_CASES, ids=[case[1] for case in TOP_CASES])
def test_invalid_gateway_value_yields_one_error_line(top: dict[str, Any], line: str) -> None:
    """Top-level, admin, sidecar and application values are validated with the same kind of line."""
    result = load(config(**top))
    assert lines(result) == [f"ERROR   {line}"]
    assert result.plan is None


def test_problem_line_uses_the_documented_format() -> None:
    """gateway-config.md: problems outside processor texts name the YAML path."""
    data = copy.deepcopy(BASE)
    data["services"][0]["endpoints"].append({"id": "ep2", "public_path": "/q", "target": "not a url"})
    result = load(data)
    assert lines(result) == ["ERROR   services[0].endpoints[1].target: Invalid URL"]
    (problem,) = result.problems
    assert (problem.level, problem.key, problem.message, problem.where, problem.point) == (
        Level.ERROR,
        "services[0].endpoints[1].target",
        "Invalid URL",
        "",
        "",
    )


# ---------------------------------------------------------------------------------------------------------------
# Unknown keys and duplicates
# ---------------------------------------------------------------------------------------------------------------

UNKNOWN_KEY_CASES = [
    (config(lisen="0.0.0.0:80"), "lisen"),
    ({"services": [{"id": "s", "nmae": "typo"}]}, "services[0].nmae"),
    (config(endpoint={"timout": 5}), f"{EP}.timout"),
    (config(endpoint={"api_key": {"in": "query", "nam": "k"}}), f"{EP}.api_key.nam"),
    (config(endpoint={"error_set": {403: {"body": "x", "bdy": "y"}}}), f"{EP}.error_set.403.bdy"),
    (config(admin={"listen": "127.0.0.1:9901", "tokn": "t"}), "admin.tokn"),
    (config(sidecar={"aws": {"ttl": 5}}), "sidecar.aws.ttl"),
    (config(sidecar={"output_cache": {"redis": "redis://x"}}), "sidecar.output_cache.redis"),
    (config(sidecar={"lambda": {}}), "sidecar.lambda"),
    (
        config(applications=[{"id": "a", "package_keys": [{"key": "k", "stauts": "active"}]}]),
        "applications[0].package_keys[0].stauts",
    ),
]


@pytest.mark.parametrize(("data", "path"), UNKNOWN_KEY_CASES, ids=[case[1] for case in UNKNOWN_KEY_CASES])
def test_unknown_key_at_any_depth_is_an_error(data: dict[str, Any], path: str) -> None:
    """gateway-config.md: unknown keys anywhere in the file are ERRORs (typos must not pass silently)."""
    result = load(data)
    assert lines(result) == [f"ERROR   {path}: Unknown key"]
    assert result.plan is None


def test_non_string_top_level_key_is_unknown() -> None:
    """A YAML key that is not a string cannot be a configuration key."""
    assert lines(load("1: 2\n")) == ["ERROR   1: Unknown key"]


def test_duplicate_endpoint_id_across_services_is_an_error() -> None:
    """endpointId is unique in the file, not only in its service."""
    data = copy.deepcopy(BASE)
    data["services"].append({"id": "svc2", "endpoints": [{"id": "ep", "public_path": "/other", "target": "http://b"}]})
    assert lines(load(data)) == ["ERROR   services[1].endpoints[0].id: Duplicate endpoint id"]


def test_duplicate_service_application_and_package_key_are_errors() -> None:
    """Service ids, application ids and package keys are unique in the file; the later one is reported."""
    data = copy.deepcopy(BASE)
    data["services"].append({"id": "svc", "endpoints": []})
    data["applications"] = [
        {"id": "a", "package_keys": [{"key": "k1"}]},
        {"id": "a", "package_keys": [{"key": "k2"}, {"key": "k1"}]},
    ]
    assert lines(load(data)) == [
        "ERROR   services[1].id: Duplicate service id",
        "ERROR   applications[1].id: Duplicate application id",
        "ERROR   applications[1].package_keys[1].key: Duplicate package key",
    ]


def test_repeated_yaml_key_is_an_error_not_a_silent_override() -> None:
    """PyYAML keeps the last of two equal keys; the loader reports the repetition."""
    text = "listen: 127.0.0.1:80\nlisten: 127.0.0.1:81\n"
    assert lines(load(text)) == ["ERROR   listen: Duplicate key"]


def test_error_set_status_written_twice_is_an_error() -> None:
    """403 and '403' are the same status."""
    text = textwrap.dedent(
        """\
        services:
          - id: svc
            endpoints:
              - id: ep
                public_path: /p
                target: http://b
                error_set:
                  403: {body: a}
                  '403': {body: b}
        """
    )
    assert lines(load(text)) == [f"ERROR   {EP}.error_set.403: Duplicate key"]


def test_same_route_twice_is_an_error_unless_methods_are_disjoint() -> None:
    """Method-based routing needs disjoint methods among endpoints sharing public_host and public_path."""
    data = copy.deepcopy(BASE)
    endpoints = data["services"][0]["endpoints"]
    endpoints[0]["methods"] = ["GET"]
    endpoints.append({"id": "ep2", "public_path": "/p/", "target": "http://b", "methods": ["POST"]})
    assert plan_of(data)  # disjoint: method-based routing
    endpoints.append({"id": "ep3", "public_path": "/p", "target": "http://b", "methods": ["post", "PUT"]})
    endpoints.append({"id": "ep4", "public_path": "/p", "target": "http://b", "public_host": "other.example"})
    assert lines(load(data)) == [
        "ERROR   services[0].endpoints[2].public_path: "
        "Duplicate route: same public_host, public_path and methods as services[0].endpoints[1]"
    ]


# ---------------------------------------------------------------------------------------------------------------
# Many problems, file order
# ---------------------------------------------------------------------------------------------------------------

MANY_PROBLEMS = textwrap.dedent(
    """\
    listen: nowhere
    trusted_proxies: [10.0.0.0/8, bogus]
    services:
      - id: svc
        endpoints:
          - id: ep1
            public_path: no-slash
            target: ftp://backend
            timeout: 0
            typo: true
          - id: ep1
            target: http://backend
    admin:
      listen: 127.0.0.1:9901
      extra: 1
    applications:
      - id: app
        package_keys:
          - {key: k, status: paused}
    """
)


def test_every_problem_is_reported_in_file_order() -> None:
    """All problems at once (pydantic collects, cross-checks follow), sorted by their place in the file; a
    missing key is reported at the start of its mapping."""
    result = load(MANY_PROBLEMS)
    assert lines(result) == [
        "ERROR   listen: Invalid value: HOST:PORT",
        "ERROR   trusted_proxies[1]: Invalid CIDR",
        "ERROR   services[0].endpoints[0].public_path: Invalid value: a path starting with '/'",
        "ERROR   services[0].endpoints[0].target: Invalid URL",
        "ERROR   services[0].endpoints[0].timeout: Invalid value: a number greater than 0",
        "ERROR   services[0].endpoints[0].typo: Unknown key",
        "ERROR   services[0].endpoints[1].public_path: Required",
        "ERROR   services[0].endpoints[1].id: Duplicate endpoint id",
        "ERROR   admin.extra: Unknown key",
        "ERROR   applications[0].package_keys[0].status: Invalid value: active or disabled",
    ]
    assert result.plan is None and result.unreadable is False


def test_file_with_many_problems_loads_from_disk(tmp_path: Path) -> None:
    """load_config reads the file and names it as the plan source."""
    path = tmp_path / "gw.yaml"
    path.write_text(MANY_PROBLEMS, encoding="utf-8")
    result = load_config(path, environ={})
    assert len(result.problems) == 10 and result.plan is None


def test_file_with_byte_order_mark_loads(tmp_path: Path) -> None:
    """A UTF-8 BOM is not part of the first key."""
    path = tmp_path / "gw.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(config()).encode())
    result = load_config(str(path), environ={})
    assert result.problems == [] and result.plan is not None and result.plan.source == str(path)


# ---------------------------------------------------------------------------------------------------------------
# Unreadable files
# ---------------------------------------------------------------------------------------------------------------


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    """Exit status 2 territory: one ERROR naming the file."""
    path = tmp_path / "absent.yaml"
    result = load_config(path)
    assert result.unreadable is True and result.plan is None
    (problem,) = result.problems
    assert problem.level is Level.ERROR and problem.key == str(path)
    assert problem.render() == f"ERROR   {path}: No such file or directory"


def test_directory_is_unreadable(tmp_path: Path) -> None:
    result = load_config(tmp_path)
    assert result.unreadable is True and result.plan is None and len(result.problems) == 1


def test_non_utf8_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"listen: caf\xe9\n")
    result = load_config(path)
    assert result.unreadable is True
    assert result.problems[0].message.startswith("Not UTF-8 text")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services: [\n", "YAML syntax error at line 2, column 1: while parsing a flow node"),
        ("a: 1\n---\nb: 2\n", "YAML syntax error at line 2, column 1: expected a single document"),
        ("\tlisten: x\n", "YAML syntax error at line 1, column 1: while scanning for the next token"),
        (
            "x: !!python/object:os.system 1\n",
            "YAML syntax error at line 1, column 4: could not determine a constructor",
        ),
    ],
)
def test_yaml_syntax_error_is_unreadable(text: str, message: str) -> None:
    """A YAML syntax error (or an unsafe tag) stops before validation, with the place of the error."""
    result = load(text)
    assert result.unreadable is True and result.plan is None
    (line,) = lines(result)
    assert line.startswith(f"ERROR   gw.yaml: {message}")
    assert "\n" not in line


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    """Valid YAML that is not a mapping is an ERROR (exit 1), not an unreadable file."""
    result = load(text)
    assert result.unreadable is False and result.plan is None
    assert lines(result) == ["ERROR   gw.yaml: Invalid value: the top level must be a mapping"]


@pytest.mark.parametrize(
    "text",
    [
        "services: [[1]]",
        "services: [{endpoints: 5}]",
        "services: [{id: s, endpoints: [7, null, {}]}]",
        "services: &s [{id: x, endpoints: *s}]",
        "applications: [{id: a, package_keys: [[k]]}]",
        "applications: {}",
        "sidecar: [1]",
        "services: [{id: s, endpoints: [{id: e, public_path: /, target: 'http://h', error_set: [1]}]}]",
        "services: [{id: s, endpoints: [{id: e, public_path: /, target: 'http://h', api_key: {in: [x]}}]}]",
        "services: [{id: s, endpoints: [{id: 1, pre_processing: 'region: x'}, {id: 1, post_processing: 5}]}]",
        "a: &x {b: *x}",
        "? - x\n: y",
    ],
)
def test_loader_never_raises_on_malformed_structure(text: str) -> None:
    """Odd shapes end as problem lines, never as exceptions; no plan."""
    result = load(text)
    assert result.plan is None and result.problems
    assert all(problem.level is Level.ERROR for problem in result.problems)
    assert not any("Internal error" in problem.message for problem in result.problems)


# ---------------------------------------------------------------------------------------------------------------
# Plan values
# ---------------------------------------------------------------------------------------------------------------


def test_public_path_is_normalised() -> None:
    """Leading '/', trailing '/' removed except for the root."""
    assert only_endpoint(config(endpoint={"public_path": "/my/op/"})).public_path == "/my/op"
    assert only_endpoint(config(endpoint={"public_path": "/"})).public_path == "/"
    assert only_endpoint(config(endpoint={"public_path": "//"})).public_path == "/"


def test_public_host_is_lower_cased_without_port() -> None:
    assert only_endpoint(config(endpoint={"public_host": "API.Acme.com:8443"})).public_host == "api.acme.com"
    assert only_endpoint(config(endpoint={"public_host": "[::0001]:443"})).public_host == "[::1]"


def test_methods_are_upper_cased_into_a_set() -> None:
    assert only_endpoint(config(endpoint={"methods": ["get", "Post", "GET"]})).methods == frozenset({"GET", "POST"})


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://backend", Target("http", "backend", 80, "", "")),
        ("http://backend/", Target("http", "backend", 80, "", "")),
        ("HTTPS://Backend.Example/v1/?a=1&b=2", Target("https", "backend.example", 443, "/v1", "a=1&b=2")),
        ("https://backend:8443/a/b", Target("https", "backend", 8443, "/a/b", "")),
        ("http://[::1]:9000/x/", Target("http", "[::1]", 9000, "/x", "")),
        ("http://10.0.0.5:80/x", Target("http", "10.0.0.5", 80, "/x", "")),
    ],
)
def test_target_is_split_once(url: str, target: Target) -> None:
    """Scheme, lower-cased host (IPv6 in brackets), default port, base path without trailing '/', query."""
    assert only_endpoint(config(endpoint={"target": url})).target == target


def test_timeout_accepts_fractions_of_seconds() -> None:
    assert only_endpoint(config(endpoint={"timeout": 2.5})).timeout_s == 2.5
    assert only_endpoint(config(endpoint={"timeout": 7})).timeout_s == 7.0


@pytest.mark.parametrize(
    ("api_key", "location"),
    [
        (None, KeyLocation(False, ("api_key", "apikey"))),
        ({"in": "query"}, KeyLocation(False, ("api_key", "apikey"))),
        ({"in": "query", "name": "key"}, KeyLocation(False, ("key",))),
        ({"name": "Key"}, KeyLocation(False, ("Key",))),
        ({"in": "header"}, KeyLocation(True, ("x-api-key",))),
        ({"in": "header", "name": "X-Mashery-Key"}, KeyLocation(True, ("x-mashery-key",))),
    ],
)
def test_key_location(api_key: dict[str, str] | None, location: KeyLocation) -> None:
    """Query api_key with alias apikey by default; header X-Api-Key; an explicit name disables the alias."""
    assert only_endpoint(config(endpoint={"api_key": api_key})).key_location == location


def test_endpoint_options_are_copied() -> None:
    endpoint = only_endpoint(
        config(
            endpoint={
                "name": "create order",
                "key_required": False,
                "error_format": "json",
                "error_set": {
                    "429": {"body": "slow down"},
                    503: {
                        "body": "<busy/>",
                        "content_type": "application/xml",
                        "status_message": "Busy",
                        "detail_header": "try later",
                    },
                },
                "route_hosts": ["Other.Example:8080", "third", "[::1]:81"],
            }
        )
    )
    assert endpoint.name == "create order"
    assert endpoint.key_required is False
    assert endpoint.error_format is ErrorFormat.JSON
    assert dict(endpoint.error_set) == {
        429: ErrorSetEntry("slow down", "text/plain", None, None),
        503: ErrorSetEntry("<busy/>", "application/xml", "Busy", "try later"),
    }
    assert endpoint.route_hosts == frozenset({"other.example:8080", "third", "[::1]:81", "backend:9000"})


def test_top_level_settings_are_copied() -> None:
    plan = plan_of(
        config(
            listen="[::1]:8443",
            trusted_proxies=["10.0.0.0/8", "fd00::/8", "192.168.1.7"],
            admin={"listen": "0.0.0.0:0", "token": "s3cret"},
            max_request_body="10 MB",
        )
    )
    assert (plan.listen_host, plan.listen_port) == ("::1", 8443)
    assert (plan.admin_host, plan.admin_port, plan.admin_token) == ("0.0.0.0", 0, "s3cret")
    assert plan.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
        ipaddress.ip_network("192.168.1.7/32"),
    )
    assert plan.max_request_body == 10 * 1024 * 1024
    assert plan_of(config(max_request_body=1000)).max_request_body == 1000


def test_sidecar_settings_are_copied() -> None:
    plan = plan_of(
        config(
            sidecar={
                "allowed_role_prefixes": ["tibco_sidecar_connector", "Boomi_sidecar_connector"],
                "aws": {"ssm_cache_ttl_s": 60},
                "output_cache": {
                    "local_entries": 5,
                    "redis_url": "redis://cache:6379/0",
                    "max_ttl_s": 1.5,
                    "redis_timeout_ms": 20,
                },
                "nonblocking": {"queue_size": 10, "workers": 2, "drain_s": 0.5},
                "python": {"max_threads": 4},
            }
        )
    )
    assert plan.sidecar == SidecarSettings(
        allowed_role_prefixes=("tibco_sidecar_connector", "Boomi_sidecar_connector"),
        ssm_cache_ttl_s=60.0,
        output_cache_local_entries=5,
        output_cache_redis_url="redis://cache:6379/0",
        output_cache_max_ttl_s=1.5,
        output_cache_redis_timeout_ms=20,
        nonblocking_queue_size=10,
        nonblocking_workers=2,
        nonblocking_drain_s=0.5,
        python_max_threads=4,
    )
    partial = plan_of(config(sidecar={"output_cache": {"max_ttl_s": 10}, "aws": None}))
    assert partial.sidecar == SidecarSettings(output_cache_max_ttl_s=10.0)


def test_package_keys_are_indexed_with_their_application() -> None:
    """keys maps every package key to its key record; disabled keys are present but inactive."""
    plan = plan_of(
        config(
            applications=[
                {
                    "id": "app-1",
                    "name": "Acme mobile",
                    "eavs": {"tier": "gold", "blank": "  ", "empty": "", "none": None, "n": 2, "f": 1.5, "b": True},
                    "package_keys": [
                        {"key": "k-active", "eavs": {"scope": "orders", "blank": " "}},
                        {"key": "k-disabled", "status": "disabled"},
                    ],
                },
                {"id": "app-2", "package_keys": [{"key": "k-other", "eavs": {"off": False}}]},
                {"id": "app-3"},
            ]
        )
    )
    assert set(plan.keys) == {"k-active", "k-disabled", "k-other"}
    active, disabled, other = plan.keys["k-active"], plan.keys["k-disabled"], plan.keys["k-other"]
    assert active.active is True and disabled.active is False and other.active is True
    assert active.application is disabled.application
    assert dict(active.application.eavs) == {"tier": "gold", "n": "2", "f": "1.5", "b": "true"}
    assert dict(active.eavs) == {"scope": "orders"}
    assert dict(disabled.eavs) == {}
    assert dict(other.eavs) == {"off": "false"}
    assert (other.application.id, other.application.name) == ("app-2", "")
    with pytest.raises(TypeError):
        plan.keys["new"] = active  # type: ignore[index]


def test_plan_is_frozen() -> None:
    plan = plan_of(config())
    with pytest.raises(AttributeError):
        plan.listen_port = 1  # type: ignore[misc]


def test_endpoints_keep_file_order_across_services() -> None:
    data = copy.deepcopy(BASE)
    data["services"][0]["name"] = "Orders"
    data["services"].append(
        {
            "id": "svc2",
            "endpoints": [
                {"id": "a", "public_path": "/a", "target": "http://b"},
                {"id": "b", "public_path": "/b", "target": "http://b"},
            ],
        }
    )
    plan = plan_of(data)
    assert [(e.service_id, e.endpoint_id, e.service_name) for e in plan.endpoints] == [
        ("svc", "ep", "Orders"),
        ("svc2", "a", ""),
        ("svc2", "b", ""),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Processor texts (config/processor.py)
# ---------------------------------------------------------------------------------------------------------------


def test_processor_texts_are_compiled_into_the_plan() -> None:
    """pre_processing and post_processing become ProcessorPlans bound to their endpoint."""
    endpoint = only_endpoint(
        config(
            endpoint={
                "timeout": 10,
                "pre_processing": NO_ROLE_PROCESSOR + "timeout: 2000\n",
                "post_processing": NO_ROLE_PROCESSOR,
            }
        )
    )
    assert endpoint.pre is not None and endpoint.post is not None
    assert (endpoint.pre.point, endpoint.post.point) == (Point.PRE, Point.POST)
    assert (endpoint.pre.service_id, endpoint.pre.endpoint_id) == ("svc", "ep")
    assert endpoint.pre.timeout_ms == 2000


def test_blank_processor_text_means_no_processor() -> None:
    endpoint = only_endpoint(config(endpoint={"pre_processing": "  \n", "post_processing": None}))
    assert endpoint.pre is None and endpoint.post is None


def test_processor_problems_follow_their_endpoint_yaml_problems() -> None:
    """Contract §2.2 lines for processor texts, after that endpoint's YAML problems and before the next
    endpoint's; warnings and errors of both points and the timeout sum are all reported."""
    text = textwrap.dedent(
        f"""\
        services:
          - id: svc
            endpoints:
              - id: ep1
                public_path: /a
                target: http://backend
                timeout: 1
                pre_processing: |
                  functionARN: {LAMBDA_ARN}
                  useAssumeRole: false
                  synchronicity: sometimes
                post_processing: |
                  region: us-east-1
                  functionARN: {LAMBDA_ARN}
                  useAssumeRole: false
                  timeout: 2000
                typo: 1
              - id: ep2
                public_path: no-slash
                target: http://backend
        """
    )
    assert lines(load(text)) == [
        "ERROR   services[0].endpoints[0].typo: Unknown key",
        "WARNING svc/ep1  pre   synchronicity: Unknown synchronicity, request-response will be used",
        "ERROR   svc/ep1  pre   region: AWS Region Not Specified",
        "ERROR   svc/ep1  post  timeout: Sidecar Connector timeout is greater than endpoint timeout",
        "ERROR   services[0].endpoints[1].public_path: Invalid value: a path starting with '/'",
    ]


def test_processor_warning_does_not_prevent_the_plan() -> None:
    """WARNING lines are reported, the plan is still built (check exits 0)."""
    result = load(config(endpoint={"pre_processing": NO_ROLE_PROCESSOR + "synchronicity: sometimes\n"}))
    assert lines(result) == [
        "WARNING svc/ep  pre   synchronicity: Unknown synchronicity, request-response will be used"
    ]
    assert result.plan is not None and result.plan.endpoints[0].pre is not None


def test_processor_uses_the_given_environment_not_the_process_one() -> None:
    """``environ`` is passed to the processor compiler (``${VAR}`` in http stack headers, §2.5)."""
    processor = "stack: http\nurl: http://127.0.0.1:9100/hook\nheader.X-Token: ${SIDECAR_TEST_TOKEN}\n"
    data = config(endpoint={"pre_processing": processor})
    result = load(data, environ={})
    assert [(p.level, p.where, p.point, p.key) for p in result.problems] == [
        (Level.ERROR, "svc/ep", "pre", "header.X-Token")
    ]
    endpoint = plan_of(data, environ={"SIDECAR_TEST_TOKEN": "t0k"}).endpoints[0]
    assert endpoint.pre is not None


def test_processor_is_checked_with_the_sidecar_settings() -> None:
    """allowed_role_prefixes (§9.7) reaches the processor compiler: settings are built before processors."""
    processor = (
        f"region: us-east-1\nfunctionARN: {LAMBDA_ARN}\n"
        "roleARN: arn:aws:iam::123456789012:role/other\nexternalIdKey: acme/key\n"
    )
    data = config(endpoint={"pre_processing": processor})
    assert plan_of(data).endpoints[0].pre is not None
    data["sidecar"] = {"allowed_role_prefixes": ["tibco_sidecar_connector"]}
    assert [(p.where, p.point, p.key) for p in load(data).problems] == [("svc/ep", "pre", "roleARN")]


def test_processor_texts_are_checked_even_when_the_endpoint_is_invalid() -> None:
    """check reports everything at once: a bad target does not hide the processor's own problems."""
    data = config(endpoint={"target": "nope", "post_processing": "region: us-east-1\nuseAssumeRole: false\n"})
    assert lines(load(data)) == [
        f"ERROR   {EP}.target: Invalid URL",
        "ERROR   svc/ep  post  functionARN: Function ARN Not Specified",
    ]
