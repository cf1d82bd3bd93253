"""``sidecar-gateway demo``: the gateway in front of an example backend, with pre- and post-processors served
by the local Lambda runner (real ``awslambdaric`` runtimes), all on loopback with no cloud account.

Endpoints (service ``demo``):

* ``/allow``    pre ``allow``: ``{}`` → the backend answers unchanged;
* ``/modify``   pre ``add_header`` (adds ``X-Demo-Caller``/``X-Demo-Tier`` to the backend request) and post
  ``rewrite_response`` (wraps the backend's JSON in an envelope);
* ``/guarded``  pre ``require_header``: terminate 401 unless ``X-Demo-Token: let-me-in``.

From a checkout, the five function-author examples of ``examples/`` are served too (JWT authentication, plan-based
verbs, PII masking, event analytics, backend credentials), each with its documented ``endpoint.yaml``.

``--smoke`` runs the printed calls itself and exits 0 when every answer is the expected one (used by the tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["main"]

FUNCTIONS_DIR = Path(__file__).parent / "functions"
EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"  # present in a checkout, not in a wheel
EXAMPLES = ("jwt_auth", "verb_plan", "pii_masking", "event_analytics", "backend_credentials")
DEMO_KEY = "demo-key-0123456789"
REGION = "us-east-1"
ACCOUNT = "123456789012"
READY_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def _processor(name: str, extra: str = "") -> str:
    return (f"region: {REGION}\nfunctionARN: {_arn(name)}\nuseAssumeRole: false\ntimeout: 3000\n{extra}")


def _example_endpoints(target: str) -> list[dict[str, object]]:
    """The examples' documented endpoint.yaml files, pointed at the demo backend."""
    import yaml

    endpoints = []
    for name in EXAMPLES:
        ep = yaml.safe_load((EXAMPLES_DIR / name / "endpoint.yaml").read_text())
        ep["target"] = target + "/" + ep["target"].rstrip("/").rsplit("/", 1)[-1]
        endpoints.append(ep)
    return endpoints


def _functions_dir(workdir: Path, with_examples: bool) -> Path:
    """The demo functions, plus the examples with their manifest (environment pointed into ``workdir``)."""
    if not with_examples:
        return FUNCTIONS_DIR
    import yaml

    target = workdir / "functions"
    shutil.copytree(FUNCTIONS_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    for name in EXAMPLES:
        shutil.copytree(EXAMPLES_DIR / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = yaml.safe_load((EXAMPLES_DIR / "functions.yaml").read_text())
    manifest["event_analytics"]["environment"]["ANALYTICS_FILE"] = str(workdir / "analytics.jsonl")
    (target / "functions.yaml").write_text(yaml.safe_dump(manifest))
    return target


def _jwt_material() -> tuple[str, str] | None:
    """(public key PEM, a valid RS256 token for 'alice') — None when PyJWT/cryptography are not installed."""
    try:
        import jwt
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        return None
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    token = jwt.encode({"sub": "alice", "aud": "orders-api", "exp": int(time.time()) + 3600}, key, algorithm="RS256")
    return public, token


def _config(port: int, admin_port: int, backend_port: int, jwt_public_key: str | None = None,
            with_examples: bool = False) -> str:
    target = f"http://127.0.0.1:{backend_port}"
    doc = {
        "listen": f"127.0.0.1:{port}",
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "services": [{
            "id": "demo",
            "name": "sidecar-gateway demo",
            "endpoints": [
                {"id": "allow", "public_path": "/allow", "target": f"{target}/allow", "timeout": 10,
                 "pre_processing": _processor("allow")},
                {"id": "modify", "public_path": "/modify", "target": f"{target}/modify", "timeout": 10,
                 "pre_processing": _processor("add_header", "include-eavs: tier"),
                 "post_processing": _processor("rewrite_response", "expand-input: responsePayload")},
                {"id": "guarded", "public_path": "/guarded", "target": f"{target}/guarded", "timeout": 10,
                 "pre_processing": _processor("require_header", "include-request-headers: X-Demo-Token")},
                *(_example_endpoints(target) if with_examples else []),
            ],
        }],
        "applications": [{"id": "demo-app", "name": "Demo application",
                          "eavs": {"tier": "gold", **({"jwt_public_key": jwt_public_key} if jwt_public_key else {})},
                          "package_keys": [{"key": DEMO_KEY, "eavs": {"allowed_verbs": "GET,HEAD"}}]}],
    }
    return json.dumps(doc, indent=2)  # JSON is YAML


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {what} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: {what} did not start within {READY_TIMEOUT_S:.0f} s")


def _wait_ready(admin_port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: the gateway exited with status {proc.returncode}")
        with contextlib.suppress(OSError, urllib.error.URLError), \
                urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise SystemExit("demo: the gateway did not become ready")


Call = tuple[str, str, dict[str, str], int, str, str]


def _example_calls(base: str, token: str | None) -> list[Call]:
    calls: list[Call] = []
    if token:
        calls += [
            ("examples/jwt_auth: a valid RS256 token → the backend sees X-Authenticated-User: alice",
             f"{base}/jwt/orders?api_key={DEMO_KEY}", {"Authorization": f"Bearer {token}"}, 200,
             "x-authenticated-user", "GET"),
            ("examples/jwt_auth: a forged token → 401",
             f"{base}/jwt/orders?api_key={DEMO_KEY}", {"Authorization": "Bearer not.a.jwt"}, 401, "", "GET"),
        ]
    calls += [
        ("examples/verb_plan: GET is in the key's plan (allowed_verbs: GET,HEAD)",
         f"{base}/plan/items?api_key={DEMO_KEY}", {}, 200, "hello", "GET"),
        ("examples/verb_plan: DELETE is not → 405 with Allow",
         f"{base}/plan/items?api_key={DEMO_KEY}", {}, 405, "", "DELETE"),
        ("examples/pii_masking: e-mail addresses and card numbers in the backend's JSON are masked",
         f"{base}/customers/list?api_key={DEMO_KEY}", {}, 200, "***", "GET"),
        ("examples/event_analytics: the call is not delayed; one JSON line lands in analytics.jsonl",
         f"{base}/tracked/page?api_key={DEMO_KEY}", {}, 200, "hello", "GET"),
        ("examples/backend_credentials: the backend receives the function's Authorization, not the client's",
         f"{base}/partner/data?api_key={DEMO_KEY}", {"Authorization": "Bearer client-secret"}, 200,
         "demo-backend-token", "GET"),
    ]
    return calls


def _calls(port: int, token: str | None = None, with_examples: bool = False) -> list[Call]:
    """(title, url, headers, expected status, expected text in the body, method)."""
    base = f"http://127.0.0.1:{port}"
    return [
        ("allow: the pre-processor returns {} and the backend answers unchanged",
         f"{base}/allow/hello?api_key={DEMO_KEY}", {}, 200, "hello from the example backend", "GET"),
        ("modify: the pre-processor adds X-Demo-Caller/X-Demo-Tier, the post-processor rewrites the answer",
         f"{base}/modify/orders?api_key={DEMO_KEY}", {}, 200, "rewrittenBy", "GET"),
        ("terminate: no X-Demo-Token, so the pre-processor answers 401 itself",
         f"{base}/guarded/secret?api_key={DEMO_KEY}", {}, 401, "Missing or wrong X-Demo-Token", "GET"),
        ("allow with the right token",
         f"{base}/guarded/secret?api_key={DEMO_KEY}", {"X-Demo-Token": "let-me-in"}, 200, "hello", "GET"),
        ("no package key: the gateway answers 403 before any function runs",
         f"{base}/allow/hello", {}, 403, "AuthenticationFailure", "GET"),
        *(_example_calls(base, token) if with_examples else []),
    ]


def _curl(url: str, headers: dict[str, str], method: str) -> str:
    verb = [] if method == "GET" else ["-X", method]
    parts = ["curl", "-i", *verb] + [f"-H '{k}: {v}'" for k, v in headers.items()] + [f"'{url}'"]
    return " ".join(parts)


def _smoke(calls: list[Call]) -> int:
    failures = 0
    for title, url, headers, status, text, method in calls:
        req = urllib.request.Request(url, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                got_status, body = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            got_status, body = e.code, e.read().decode()
        ok = got_status == status and text.lower() in body.lower()
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {got_status} {title}")
        if not ok:
            print(f"     expected {status} with {text!r}, got body: {body[:300]!r}")
    return 1 if failures else 0


def main(port: int = 8080, smoke: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-gateway-demo-"))
    admin_port, backend_port, runner_port = _free_port(), _free_port(), _free_port()
    with_examples = EXAMPLES_DIR.is_dir()
    jwt_material = _jwt_material() if with_examples else None
    token = jwt_material[1] if jwt_material else None
    functions_dir = _functions_dir(workdir, with_examples)
    config_path = workdir / "demo.yaml"
    config_path.write_text(_config(port, admin_port, backend_port, jwt_material[0] if jwt_material else None,
                                   with_examples))
    calls = _calls(port, token, with_examples)
    env = dict(os.environ)
    env.update({
        "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{runner_port}",
        "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo-secret", "AWS_REGION": REGION,
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("AWS_PROFILE", None)
    py = sys.executable
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], log: str | None) -> subprocess.Popen[bytes]:
        out = open(workdir / log, "wb") if log else None  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True)
        procs.append(proc)
        return proc

    try:
        backend = start([py, "-m", "sidecar_gateway.demo.backend", "--port", str(backend_port)], "backend.log")
        runner = start([py, "-m", "sidecar_gateway.localrunner", str(functions_dir), "--listen",
                        f"127.0.0.1:{runner_port}", "--region", REGION, "--account-id", ACCOUNT],
                       "functions.log")
        gateway = start([py, "-m", "sidecar_gateway", "run", str(config_path)], "gateway.log")
        _wait_tcp(backend_port, backend, "the example backend")
        _wait_tcp(runner_port, runner, "the local Lambda runner")
        _wait_ready(admin_port, gateway)
        if smoke:
            return _smoke(calls)
        print(f"\nsidecar-gateway demo is up (logs and config in {workdir}).\n")
        print(f"  gateway   http://127.0.0.1:{port}   admin http://127.0.0.1:{admin_port}/metrics")
        print(f"  functions local Lambda runner on http://127.0.0.1:{runner_port} ({functions_dir})\n")
        for title, url, headers, _, _, method in calls:
            print(f"# {title}\n{_curl(url, headers, method)}\n")
        if with_examples:
            print(f"# the analytics function appends to {workdir / 'analytics.jsonl'}\n")
        print("Ctrl-C stops everything.")
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
