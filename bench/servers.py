"""Configuration and start-up of every server of the benchmark, all on loopback in one temporary directory.

* ``infra`` — one nginx with ``worker_processes 1``: the static backend (a 100-byte body), the sidecar function
  over HTTP and the Lambda Invoke stub (``POST /2015-03-31/functions/<name>/invocations`` → ``{}``; SigV4 is not
  verified).  The function: ``/allow`` → 200 ``{}`` (``application/json``), the function of issue 6, called by the
  gateway *and* by the peers' auth analogues in S2; ``/terminate`` → a terminate verdict (the gateway in S6);
  ``/peer-deny`` → an empty 403 (the peers in S6: the issue defines no S6 peer, and an empty 403 is the cheapest
  answer for them); ``/peer-allow`` → an empty 200, for the S2 reference rows only.  The cheapest possible
  function, so the proxies are measured, not the function.
* ``nginx`` peer — ``worker_processes`` = cores: plain ``proxy_pass`` to a keep-alive upstream, and
  ``auth_request`` to the same function as the gateway (``/allow``).
* ``caddy`` peer — ``GOMAXPROCS`` = cores: ``reverse_proxy`` and ``forward_auth`` to ``/allow``.
* Reference rows of S2 (``REFERENCE_TARGETS``: no target of the issue, no fixed-rate run): ``/auth-empty`` on
  both peers calls ``/peer-allow``.  Neither peer uses the body of the auth answer: after an answer with a body
  (``{}``) both close the upstream connection, so every request opens a new one to the function (measured with
  ``ss``: one TIME_WAIT socket per request); the empty answer keeps the upstream keep-alive connection.
* ``gateway`` — ``sidecar-gateway run CONFIG --workers <cores>``, one endpoint per scenario.
* ``floor`` — a reference row, not a peer (``bench/floor_proxy.py``, forked workers = cores): a featureless Python
  proxy on the gateway's own stack (uvloop + httptools + orjson) doing S1, S2 and S6 with nothing else — what any
  CPython request cycle costs on this machine, so that the gateway's distance to the targets splits into "Python"
  (floor ÷ nginx) and "what the gateway does on top" (gateway ÷ floor).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from common import LOOPBACK, Managed, ProcessSet, free_ports, wait_ready

BACKEND_BODY = ('{"service":"bench-backend","status":"ok","items":[1,2,3],"note":"static response of 100 bytes"}'
                ).ljust(99) + "\n"
UPSTREAM_KEEPALIVE = 128  # idle keep-alive connections per upstream for the peers (64 client connections)
MAX_CONNECTIONS = 20000  # nginx worker_connections: the idle-connection test holds 10,000 at once
KEEPALIVE_REQUESTS = 1_000_000  # never recycle a keep-alive connection during a run
PAYLOAD_LIMIT_KB = 20  # max-payload-size of the 10 KB body scenario (issue 6)
LAMBDA_REGION = "us-east-1"
LAMBDA_ARN = f"arn:aws:lambda:{LAMBDA_REGION}:123456789012:function:bench-allow"
DUMMY_AWS_KEY = "AKIDBENCHMARKEXAMPLE"
DUMMY_AWS_SECRET = "benchmark/secret/not/a/real/key/0000000000"
SERVICE_ID = "bench"
# Shown, not a target (no fixed-rate run): the peers' auth to an empty answer, and the featureless Python floor
REFERENCE_TARGETS = ("nginx_tuned", "caddy_tuned", "floor")
PEER_LOG_NOTE = "access logs off in nginx and Caddy; the gateway's access log goes to /dev/null"

assert len(BACKEND_BODY) == 100


@dataclass(frozen=True)
class Ports:
    backend: int
    function: int
    lambda_stub: int
    nginx: int
    caddy: int
    gateway: int
    gateway_admin: int
    big_gateway: int
    big_gateway_admin: int
    floor: int

    @classmethod
    def allocate(cls) -> Ports:
        return cls(*free_ports(10))


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    gateway_path: str
    nginx_path: str | None  # None: no meaningful peer configuration (n/a)
    caddy_path: str | None
    peer_kind: str  # how the peers do the job, for the report
    post_body: bool = False
    expected_status: int = 200
    rate_reference: str = ""  # scenario whose nginx rps sets the fixed rate ("" = this one)
    short: str = ""  # chart label
    tuned_path: str | None = None  # path of the peers' reference rows (nginx_tuned, caddy_tuned), on both peers
    floor_path: str | None = None  # path on the featureless Python floor (bench/floor_proxy.py)

    def path(self, target: str) -> str | None:
        """This scenario's path on ``target`` (None: n/a)."""
        if target == "floor":
            return self.floor_path
        if target in REFERENCE_TARGETS:
            return self.tuned_path
        return {"gateway": self.gateway_path, "nginx": self.nginx_path, "caddy": self.caddy_path}[target]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("s1", "plain proxy", "/s1", "/plain", "/plain", "nginx proxy_pass / Caddy reverse_proxy",
             short="plain proxy", floor_path="/plain"),
    Scenario("s2", "pre-processor, http stack, allow", "/s2", "/auth", "/auth",
             "nginx auth_request / Caddy forward_auth to the function the gateway calls (200 `{}`); reference rows: "
             "the same to an empty 200", short="pre, http", tuned_path="/auth-empty", floor_path="/pre"),
    Scenario("s3", "pre + post, http stack, allow", "/s3", None, None, "n/a (no post-processing hook)",
             rate_reference="s2", short="pre + post, http"),
    Scenario("s4", "pre-processor, aws-lambda stack (SigV4) against the stub", "/s4", None, None,
             "n/a (no SigV4 sub-request)", rate_reference="s2", short="pre, aws-lambda"),
    Scenario("s5", "pre-processor, 10 KB JSON body, expand-input: requestPayload", "/s5", None, None,
             "n/a (auth_request/forward_auth never send the body)", post_body=True, rate_reference="s2",
             short="pre, 10 KB body"),
    Scenario("s6", "terminate at pre (403, no backend call)", "/s6", "/deny", "/deny",
             "auth_request / forward_auth answering 403", expected_status=403, short="terminate at pre",
             floor_path="/deny"),
)
SCENARIO_BY_KEY = {s.key: s for s in SCENARIOS}


# ----------------------------------------------------------------------------------------------- nginx


def _nginx_common(prefix: Path, name: str, workers: int) -> str:
    temp = prefix / f"{name}-temp"
    temp.mkdir(exist_ok=True)
    temp.chmod(0o777)
    paths = "\n".join(f"    {kind}_temp_path {temp}/{kind};" for kind in
                      ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/{name}.pid;
error_log {prefix}/{name}-error.log warn;
worker_rlimit_nofile {MAX_CONNECTIONS * 2};
events {{ worker_connections {MAX_CONNECTIONS}; }}
http {{
    access_log off;
    keepalive_requests {KEEPALIVE_REQUESTS};
    keepalive_timeout 75s;
    client_body_buffer_size 64k;
    client_max_body_size 10m;
{paths}
    default_type text/plain;
"""


def infra_nginx_conf(prefix: Path, ports: Ports) -> str:
    static = prefix / "static"
    static.mkdir(exist_ok=True)
    static.chmod(0o755)
    (static / "empty").write_bytes(b"")
    return _nginx_common(prefix, "infra", 1) + f"""
    server {{  # static backend
        listen {LOOPBACK}:{ports.backend} backlog=4096;
        location / {{ return 200 '{BACKEND_BODY}'; }}
    }}
    server {{  # the sidecar function over HTTP
        listen {LOOPBACK}:{ports.function} backlog=4096;
        default_type application/json;
        location = /allow {{ return 200 '{{}}'; }}
        location = /terminate {{ return 200 '{{"terminate":{{"code":403}}}}'; }}
        # Empty answers for the peers' S6 and S2's reference rows: neither peer uses the body of an auth answer,
        # so an answer with one closes their upstream connection (no keep-alive).
        location = /peer-allow {{ return 200; }}
        location = /peer-deny {{ error_page 403 /empty; return 403; }}
        location = /empty {{ internal; root {static}; }}
    }}
    server {{  # Lambda Invoke stub (SigV4 not verified)
        listen {LOOPBACK}:{ports.lambda_stub} backlog=4096;
        default_type application/json;
        location ~ ^/2015-03-31/functions/[^/]+/invocations$ {{ return 200 '{{}}'; }}
        location / {{ return 404 '{{"message":"stub: unknown path"}}'; }}
    }}
}}
"""


def peer_nginx_conf(prefix: Path, ports: Ports, workers: int) -> str:
    proxy = 'proxy_http_version 1.1; proxy_set_header Connection "";'
    return _nginx_common(prefix, "nginx", workers) + f"""
    upstream backend {{ server {LOOPBACK}:{ports.backend}; keepalive {UPSTREAM_KEEPALIVE}; }}
    upstream function {{ server {LOOPBACK}:{ports.function}; keepalive {UPSTREAM_KEEPALIVE}; }}
    server {{
        listen {LOOPBACK}:{ports.nginx} backlog=4096;
        location /plain {{ proxy_pass http://backend; {proxy} }}
        location /auth {{ auth_request /_allow; proxy_pass http://backend; {proxy} }}
        location /auth-empty {{ auth_request /_allow_empty; proxy_pass http://backend; {proxy} }}
        location /deny {{ auth_request /_deny; proxy_pass http://backend; {proxy} }}
        location = /_allow {{
            internal; proxy_pass http://function/allow; {proxy}
            proxy_pass_request_body off; proxy_set_header Content-Length "";
        }}
        location = /_allow_empty {{
            internal; proxy_pass http://function/peer-allow; {proxy}
            proxy_pass_request_body off; proxy_set_header Content-Length "";
        }}
        location = /_deny {{
            internal; proxy_pass http://function/peer-deny; {proxy}
            proxy_pass_request_body off; proxy_set_header Content-Length "";
        }}
    }}
}}
"""


# ----------------------------------------------------------------------------------------------- caddy


def caddyfile(prefix: Path, ports: Ports) -> str:
    backend = f"{LOOPBACK}:{ports.backend}"
    function = f"{LOOPBACK}:{ports.function}"
    transport = f"transport http {{\n\t\t\tkeepalive_idle_conns_per_host {UPSTREAM_KEEPALIVE}\n\t\t}}"

    def handle_auth(path: str, uri: str) -> str:
        """A ``handle`` block: ``forward_auth`` to the function's ``uri``, then the backend."""
        return (f"\thandle {path}* {{\n\t\tforward_auth {function} {{\n\t\t\turi {uri}\n\t\t\t{transport}\n\t\t}}\n"
                f"\t\treverse_proxy {backend} {{\n\t\t\t{transport}\n\t\t}}\n\t}}\n")

    auth_blocks = "".join(handle_auth(path, uri) for path, uri in
                           (("/auth", "/allow"), ("/auth-empty", "/peer-allow"), ("/deny", "/peer-deny")))
    return f"""{{
\tadmin off
\tauto_https off
\tstorage file_system {prefix}/caddy-data
\tservers {{
\t\tprotocols h1
\t}}
}}
http://{LOOPBACK}:{ports.caddy} {{
\thandle /plain* {{
\t\treverse_proxy {backend} {{
\t\t\t{transport}
\t\t}}
\t}}
{auth_blocks}}}
"""


# --------------------------------------------------------------------------------------------- gateway


def _http_pre(ports: Ports, path: str, extra: str = "") -> str:
    return f"stack: http\nurl: http://{LOOPBACK}:{ports.function}{path}\n{extra}"


def gateway_config(ports: Ports) -> dict[str, object]:
    backend = f"http://{LOOPBACK}:{ports.backend}/backend"
    allow = _http_pre(ports, "/allow")
    processors: dict[str, dict[str, str]] = {
        "s1": {},
        "s2": {"pre_processing": allow},
        "s3": {"pre_processing": allow, "post_processing": allow},
        "s4": {"pre_processing": f"region: {LAMBDA_REGION}\nfunctionARN: {LAMBDA_ARN}\nuseAssumeRole: false\n"},
        "s5": {"pre_processing": _http_pre(ports, "/allow",
                                           f"expand-input: requestPayload\nmax-payload-size: {PAYLOAD_LIMIT_KB}\n")},
        "s6": {"pre_processing": _http_pre(ports, "/terminate")},
    }
    endpoints = [{"id": f"bench-{s.key}", "public_path": s.gateway_path, "target": backend, "key_required": False,
                  **processors[s.key]} for s in SCENARIOS]
    return {
        "listen": f"{LOOPBACK}:{ports.gateway}",
        "admin": {"listen": f"{LOOPBACK}:{ports.gateway_admin}"},
        "services": [{"id": SERVICE_ID, "endpoints": endpoints}],
    }


def big_gateway_config(ports: Ports, count: int) -> dict[str, object]:
    """``count`` endpoints, each with an http-stack pre-processor (the 1,000-endpoint memory target)."""
    backend = f"http://{LOOPBACK}:{ports.backend}/backend"
    endpoints = [{"id": f"ep-{i:05d}", "public_path": f"/e{i:05d}", "target": backend, "key_required": False,
                  "pre_processing": _http_pre(ports, "/allow")} for i in range(count)]
    return {
        "listen": f"{LOOPBACK}:{ports.big_gateway}",
        "admin": {"listen": f"{LOOPBACK}:{ports.big_gateway_admin}"},
        "services": [{"id": SERVICE_ID, "endpoints": endpoints}],
    }


def gateway_env(ports: Ports) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AWS_ACCESS_KEY_ID": DUMMY_AWS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_AWS_SECRET,
        "AWS_REGION": LAMBDA_REGION,
        "AWS_ENDPOINT_URL_LAMBDA": f"http://{LOOPBACK}:{ports.lambda_stub}",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    return env


# ------------------------------------------------------------------------------------------------ start


def start_nginx(procs: ProcessSet, prefix: Path, name: str, conf: str, probe_url: str) -> Managed:
    path = prefix / f"{name}.conf"
    path.write_text(conf)
    managed = procs.start(name, ["nginx", "-p", str(prefix), "-c", str(path)], prefix / f"{name}.log",
                          worker_filter="nginx: worker")
    wait_ready(probe_url, managed)
    return managed


def start_infra(procs: ProcessSet, prefix: Path, ports: Ports) -> Managed:
    return start_nginx(procs, prefix, "infra", infra_nginx_conf(prefix, ports), f"http://{LOOPBACK}:{ports.backend}/")


def start_peer_nginx(procs: ProcessSet, prefix: Path, ports: Ports, workers: int) -> Managed:
    return start_nginx(procs, prefix, "nginx", peer_nginx_conf(prefix, ports, workers),
                       f"http://{LOOPBACK}:{ports.nginx}/plain")


def start_caddy(procs: ProcessSet, prefix: Path, ports: Ports, workers: int) -> Managed:
    path = prefix / "Caddyfile"
    path.write_text(caddyfile(prefix, ports))
    home = prefix / "caddy-home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
               GOMAXPROCS=str(workers))
    managed = procs.start("caddy", ["caddy", "run", "--config", str(path), "--adapter", "caddyfile"],
                          prefix / "caddy.log", env=env)
    wait_ready(f"http://{LOOPBACK}:{ports.caddy}/plain", managed)
    return managed


FLOOR_SCRIPT = Path(__file__).with_name("floor_proxy.py")


def floor_args(script: Path, ports: Ports, workers: int) -> list[str]:
    """The command line of the floor (``floor_proxy.py``) or of a script sharing it (``floor_pieces.py``)."""
    return [str(script), "--port", str(ports.floor), "--backend", f"{LOOPBACK}:{ports.backend}/backend",
            "--function", f"{LOOPBACK}:{ports.function}", "--workers", str(workers)]


def start_floor(procs: ProcessSet, prefix: Path, ports: Ports, workers: int) -> Managed:
    managed = procs.start("floor", [sys.executable, *floor_args(FLOOR_SCRIPT, ports, workers)], prefix / "floor.log")
    wait_ready(f"http://{LOOPBACK}:{ports.floor}/plain", managed)
    return managed


def start_gateway(procs: ProcessSet, prefix: Path, name: str, config: dict[str, object], ports: Ports,
                  admin_port: int, workers: int, ready_timeout_s: float = 60.0) -> Managed:
    path = prefix / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [sys.executable, "-m", "sidecar_gateway", "run", str(path), "--workers", str(workers)]
    managed = procs.start(name, argv, prefix / f"{name}.log", env=gateway_env(ports), stdout_to_log=False,
                          worker_filter="spawn_main", exclude=("resource_tracker",))
    wait_ready(f"http://{LOOPBACK}:{admin_port}/readyz", managed, timeout_s=ready_timeout_s)
    return managed
