"""The native lane's own Lambda Invoke (aws-lambda pre-processor, SigV4 signed in ``native/_lane.c``), against real
sockets and a real gateway subprocess.

Set-up: a raw asyncio "Lambda" (``LambdaStub``, tests/support/native_sigv4_wire.py) records the exact bytes of every
Invoke and answers by the function name in its path; a raw backend records every backend request.  The gateway signs
with its own static credentials (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` [/ ``AWS_SESSION_TOKEN``]),
``useAssumeRole: false``, ``AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:PORT``.  One corpus (``CORPUS``) of GET/HEAD
calls without Authorization is sent over two keep-alive client connections, one call at a time: 20 GETs that warm
the lane's pools, a 0.3 s pause, 20 more, then each non-``{}`` answer followed by a ``{}`` GET, then HEAD calls (a
``{}`` answer and a terminate; the Invoke is a POST whose answer has a body whatever the client's method), each
followed by a ``{}`` GET.  After every call the Invoke(s), the backend request(s) and the increase of
``gateway_native_requests_total`` (admin /metrics) are recorded.

The corpus is run four times: {static credentials, with a session token} x {``SIDECAR_GATEWAY_NATIVE=0``, ``=1``}.

1. Signature: every Invoke of the native runs (all of them, so every one the native lane sent; at least 10 calls
   must have been counted native) carries an ``Authorization`` equal to the one recomputed from the recorded request
   (its X-Amz-Date, body and fixed headers) by ``sigv4.sign``, by ``sigv4.PreparedSigner.sign`` and, independently,
   by botocore's ``SigV4Auth`` (clock frozen at X-Amz-Date); the token is sent and signed when there is one; the
   date is the call's UTC time.  One function has a qualifier (``allow:live``): its ``:`` is percent-encoded in the
   path and double-encoded in the canonical URI.
2. Lane equivalence: Invoke requests (request line, header lines in order, body) identical between the lanes after
   normalising X-Amz-Date, the credential-scope date, ``Signature=`` and ``masheryMessageId``; client answers
   identical; backend requests identical after normalising ``x-mashery-message-id``.
3. Answers other than ``{}`` (terminate, modify, function error, AWS 500, empty body; a terminate to a HEAD) are
   decided by the Python lane with the Lambda's answer: the same client answer in both lanes, the one the contract
   gives, and exactly one Invoke per client call (in the native run, made on the native lane's own connection).

Reproducing by hand: ``LambdaStub().start()``, ``PlainBackend().start()`` and ``run_corpus`` work outside pytest.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from sidecar_gateway.transports.sigv4 import PreparedSigner, sign
from support.gateway_proc import GatewayProcess, config, endpoint, service, session
from support.native_sigv4_wire import Answer, LambdaStub, PlainBackend, RawConnection, Received, function_name

NATIVE_ENV = "SIDECAR_GATEWAY_NATIVE"
NATIVE_METRIC = "gateway_native_requests_total"
REGION = "us-east-1"
ACCOUNT = "123456789012"
HOST = "api.sigv4.test"
# name -> (access key, secret key, session token)
CREDENTIALS: dict[str, tuple[str, str, str | None]] = {
    "static": ("AKIDNATIVELANESTATIC", "native/lane+static/secret0123456789ABCDEFGH", None),
    "session-token": ("ASIANATIVELANETOKEN1", "native/lane+token/secret9876543210zyxwvuts",
                      "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJIMEYCIQ+session/token=="),
}
# Variables of the test's own environment that would change the gateway's credentials or endpoint.
SCRUBBED_ENV = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")
# public path -> function name (ARN suffix, optionally with a qualifier)
FUNCTIONS = {
    "/allow": "allow",
    "/allow-qualified": "allow:live",
    "/terminate": "terminate",
    "/modify": "modify",
    "/fn-error": "fn-error",
    "/aws-500": "aws-500",
    "/empty": "empty",
}
WARM_PAUSE_S = 0.3
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
AUTHORIZATION = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<ak>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/"
                          r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
                          r"Signature=(?P<sig>[0-9a-f]{64})")


def arn(function: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"


# ---------------------------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    id: str
    method: str
    target: str
    status: int  # what both lanes must answer
    conn: int = 0  # which of the two client connections
    pause_after: float = 0.0
    warm: bool = False  # the lane's pools are warm and the answer is {}: the native lane must serve it
    reaches_backend: int = 1

    def encode(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {HOST}", "User-Agent: sigv4-test/1.0",
                 "Accept: */*", "X-Drop-Me: 1"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @property
    def function(self) -> str:
        return FUNCTIONS["/" + self.target.split("/")[1]]


def _allow_calls(phase: str, warm: bool) -> list[Call]:
    out = []
    for i in range(20):
        path = "/allow-qualified" if i % 2 else "/allow"
        target = f"{path}/items/{phase}{i}" + (f"?page={i}&sort=asc" if i % 3 == 0 else "")
        out.append(Call(f"{phase}-{i:02d}{path.replace('/', '-')}", "GET", target, 200, i % 2, warm=warm))
    return out


# (function path, status both lanes must answer, reaches the backend)
OTHER_ANSWERS = (("/terminate", 403, 0), ("/modify", 200, 1), ("/fn-error", 502, 0), ("/aws-500", 500, 0),
                 ("/empty", 500, 0))
# HEAD calls, each followed by a GET {} call: (id, public path, status, reaches the backend)
HEAD_CALLS = (("head-allow", "/allow", 200, 1), ("head-allow-qualified", "/allow-qualified", 200, 1),
              ("head-terminate", "/terminate", 403, 0))


def _corpus() -> tuple[Call, ...]:
    first = _allow_calls("cold", warm=False)
    first[-1] = dataclasses.replace(first[-1], pause_after=WARM_PAUSE_S)
    calls = [*first, *_allow_calls("warm", warm=True)]
    for n, (path, status, backend) in enumerate(OTHER_ANSWERS):
        calls.append(Call(f"answer{path.replace('/', '-')}", "GET", f"{path}/items/x", status, n % 2,
                          reaches_backend=backend))
        calls.append(Call(f"allow-after{path.replace('/', '-')}", "GET", f"/allow/items/after{n}", 200, n % 2,
                          warm=True))
    for n, (call_id, path, status, backend) in enumerate(HEAD_CALLS):
        calls.append(Call(call_id, "HEAD", f"{path}/items/h{n}", status, n % 2, warm=status == 200,
                          reaches_backend=backend))
        calls.append(Call(f"allow-after-{call_id}", "GET", f"/allow/items/after-{call_id}", 200, n % 2, warm=True))
    return tuple(calls)


CORPUS = _corpus()
assert len({c.id for c in CORPUS}) == len(CORPUS)


def gateway_config(backend: PlainBackend) -> dict[str, Any]:
    endpoints = [endpoint(f"ep{n}", path, backend.url("/be"), key_required=False,
                          pre_processing=f"region: {REGION}\nfunctionARN: {arn(fn)}\nuseAssumeRole: false\n")
                 for n, (path, fn) in enumerate(FUNCTIONS.items())]
    return config(service("svc-sigv4", *endpoints))


def gateway_env(lambda_stub: LambdaStub, credentials: str, lane: str) -> dict[str, str]:
    access_key, secret_key, token = CREDENTIALS[credentials]
    env = {NATIVE_ENV: lane, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
           "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL_LAMBDA": lambda_stub.url(),
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "AWS_EC2_METADATA_DISABLED": "true"}
    if token:
        env["AWS_SESSION_TOKEN"] = token
    return env


# ---------------------------------------------------------------------------------------------------------------
# Running the corpus
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    call: Call
    answer: Answer
    invokes: list[Received]
    backend: list[Received]
    native: float  # increase of NATIVE_METRIC during the call
    t_sent: float
    t_answered: float


@dataclasses.dataclass
class LaneRun:
    credentials: str
    lane: str
    lambda_port: int
    outcomes: dict[str, Outcome] = dataclasses.field(default_factory=dict)

    def native_count(self) -> float:
        return sum(o.native for o in self.outcomes.values())


def native_count(admin: Any, gw: GatewayProcess) -> float:
    r = admin.get(gw.admin_url + "/metrics", timeout=10)
    assert r.status_code == 200
    values = [s.value for fam in text_string_to_metric_families(r.text) for s in fam.samples
              if s.name == NATIVE_METRIC]
    return sum(values)  # absent until the first native call


def run_corpus(gw: GatewayProcess, lambda_stub: LambdaStub, backend: PlainBackend, credentials: str,
               lane: str) -> LaneRun:
    run = LaneRun(credentials, lane, lambda_stub.port)
    admin = session()
    lambda_stub.take()
    backend.take()
    conns = [RawConnection(gw.port), RawConnection(gw.port)]
    try:
        count = native_count(admin, gw)
        for call in CORPUS:
            t_sent = time.time()
            answer = conns[call.conn].exchange(call.encode(), call.method)
            t_answered = time.time()
            after = native_count(admin, gw)
            run.outcomes[call.id] = Outcome(call, answer, lambda_stub.take(), backend.take(), after - count, t_sent,
                                            t_answered)
            count = after
            time.sleep(call.pause_after)
    finally:
        for conn in conns:
            conn.close()
        admin.close()
    return run


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[LambdaStub, PlainBackend]]:
    lambda_stub, backend = LambdaStub().start(), PlainBackend().start()
    yield lambda_stub, backend
    lambda_stub.stop()
    backend.stop()


@pytest.fixture(scope="module")
def lane_run(servers, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], LaneRun]:
    """``lane_run(credentials, lane)``: the corpus run once per (credentials, lane) in a fresh gateway (cached)."""
    lambda_stub, backend = servers
    workdir: Path = tmp_path_factory.mktemp("native-sigv4")
    cache: dict[tuple[str, str], LaneRun] = {}

    def get(credentials: str, lane: str) -> LaneRun:
        if (credentials, lane) not in cache:
            with pytest.MonkeyPatch.context() as mp:
                for name in SCRUBBED_ENV:
                    mp.delenv(name, raising=False)
                gw = GatewayProcess(workdir, gateway_config(backend),
                                    env=gateway_env(lambda_stub, credentials, lane))
            try:
                gw.wait_ready()
                cache[(credentials, lane)] = run_corpus(gw, lambda_stub, backend, credentials, lane)
            finally:
                gw.stop()
        return cache[(credentials, lane)]

    return get


CREDENTIAL_SETS = list(CREDENTIALS)


# ---------------------------------------------------------------------------------------------------------------
# Parsing and recomputing
# ---------------------------------------------------------------------------------------------------------------


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    assert lines[-2:] == ["", ""], head
    headers = []
    for line in lines[1:-2]:
        name, colon, value = line.partition(":")
        assert colon and name == name.strip(), f"malformed header line {line!r}"
        headers.append((name, value.strip(" \t")))
    return lines[0], headers


def single(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in headers if k.lower() == name]
    assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
    return values[0] if values else None


def botocore_authorization(url: str, headers: list[tuple[str, str]], body: bytes, timestamp: datetime,
                           credentials: tuple[str, str, str | None]) -> tuple[str, str | None]:
    """(Authorization, X-Amz-Security-Token) botocore's SigV4Auth adds for the request at ``timestamp``."""
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    # botocore 1.43 overwrites request.context["timestamp"] with its own clock in add_auth: freeze that clock
    with mock.patch("botocore.auth.get_current_datetime", return_value=timestamp.replace(tzinfo=None)):
        SigV4Auth(Credentials(*credentials), "lambda", REGION).add_auth(request)
    return request.headers["Authorization"], request.headers.get("X-Amz-Security-Token")


def check_invoke(run: LaneRun, outcome: Outcome, invoke: Received) -> None:
    """Everything about one recorded Invoke that AWS would check, recomputed three ways."""
    access_key, secret_key, token = credentials = CREDENTIALS[run.credentials]
    where = f"[{run.credentials}/{outcome.call.id}] "
    request_line, headers = parse_head(invoke.head)
    path = f"/2015-03-31/functions/{quote(arn(outcome.call.function), safe='')}/invocations"
    assert request_line == f"POST {path} HTTP/1.1", where + request_line
    assert single(headers, "host") == f"127.0.0.1:{run.lambda_port}", where + repr(headers)
    assert single(headers, "content-length") == str(len(invoke.body)), where + repr(headers)
    assert single(headers, "x-amz-invocation-type") == "RequestResponse", where + repr(headers)
    assert single(headers, "content-type") == "application/json", where + repr(headers)
    assert single(headers, "x-amz-security-token") == token, where + repr(headers)
    amz_date = single(headers, "x-amz-date")
    assert amz_date is not None and AMZ_DATE.fullmatch(amz_date), where + repr(headers)
    timestamp = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert outcome.t_sent - 2 <= timestamp.timestamp() <= outcome.t_answered + 1, \
        where + f"X-Amz-Date {amz_date} is not the call's UTC time ({outcome.t_sent:.3f}..{outcome.t_answered:.3f})"
    sent = single(headers, "authorization")
    assert sent is not None, where + "no Authorization"
    m = AUTHORIZATION.fullmatch(sent)
    assert m, where + f"malformed Authorization {sent!r}"
    assert (m["ak"], m["day"], m["region"], m["service"]) == (access_key, amz_date[:8], REGION, "lambda"), where + sent
    expected_signed = "content-type;host;x-amz-date;x-amz-invocation-type" + (";x-amz-security-token" if token else "")
    assert m["signed"] == expected_signed, where + sent
    # Recompute from the recorded request: its date, its body, the fixed headers it carries.
    url = f"http://127.0.0.1:{run.lambda_port}{path}"
    fixed = [(k, v) for k, v in headers if k.lower() in ("x-amz-invocation-type", "content-type")]
    keys = {"access_key": access_key, "secret_key": secret_key, "session_token": token, "region": REGION,
            "service": "lambda", "timestamp": timestamp}
    ours = dict(sign("POST", url, fixed, invoke.body, **keys))
    prepared = dict(PreparedSigner("POST", url, fixed).sign(invoke.body, **keys))
    boto_auth, boto_token = botocore_authorization(url, fixed, invoke.body, timestamp, credentials)
    assert boto_token == token
    assert ours["X-Amz-Date"] == amz_date
    assert (sent, sent, sent) == (ours["Authorization"], prepared["Authorization"], boto_auth), \
        where + "the Invoke's signature is not the one SigV4 gives for this request"


def message_id_of(invoke: Received) -> str:
    doc = json.loads(invoke.body)
    assert isinstance(doc, dict), invoke.body
    return doc["masheryMessageId"]


# Normalisation for comparing the lanes
_DATE_LINE = re.compile(r"(?im)^(x-amz-date:[ \t]*)\d{8}T\d{6}Z")
_SCOPE_DAY = re.compile(r"(Credential=[^/\s]+/)\d{8}/")
_SIGNATURE = re.compile(r"Signature=[0-9a-f]{64}")
_BODY_MID = re.compile(r'("masheryMessageId"\s*:\s*")[^"]*(")')
_MID_LINE = re.compile(r"(?im)^(x-mashery-message-id[ \t]*:[ \t]*)[^\r\n]*")


def invoke_view(invoke: Received) -> tuple[list[str], str]:
    head = invoke.head.decode("latin-1")
    head = _SIGNATURE.sub("Signature=<signature>", _SCOPE_DAY.sub(r"\1<day>/", _DATE_LINE.sub(r"\1<date>", head)))
    return head.split("\r\n"), _BODY_MID.sub(r"\1<message-id>\2", invoke.body.decode("utf-8"))


def backend_view(received: Received) -> tuple[list[str], bytes]:
    return _MID_LINE.sub(r"\1<message-id>", received.head.decode("latin-1")).split("\r\n"), received.body


def client_view(outcome: Outcome) -> tuple[list[str], bytes]:
    head, body = outcome.answer.head.decode("latin-1"), outcome.answer.body
    for invoke in outcome.invokes:  # the call's own message id, wherever it appears
        mid = message_id_of(invoke)
        head, body = head.replace(mid, "<message-id>"), body.replace(mid.encode(), b"<message-id>")
    return _MID_LINE.sub(r"\1<message-id>", head).split("\r\n"), body


# ---------------------------------------------------------------------------------------------------------------
# 1. Signature correctness
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", CREDENTIAL_SETS)
def test_every_native_invoke_is_signed_as_botocore_signs_it(lane_run, credentials: str) -> None:
    """Every Invoke of the native-lane run (those the native lane sent among them: at least 10 counted calls) carries
    the X-Amz-Date of the call, the session token when there is one, and the Authorization that sigv4.sign,
    PreparedSigner.sign and botocore's SigV4Auth compute for exactly that request."""
    run = lane_run(credentials, "1")
    native = [o for o in run.outcomes.values() if o.native]
    assert len(native) >= 10, f"only {[o.call.id for o in native]} were served natively"
    checked = 0
    for outcome in run.outcomes.values():
        assert len(outcome.invokes) == 1, f"{outcome.call.id}: {len(outcome.invokes)} Invokes"
        for invoke in outcome.invokes:
            check_invoke(run, outcome, invoke)
            checked += 1
    assert checked == len(CORPUS)


@pytest.mark.parametrize("credentials", CREDENTIAL_SETS)
def test_python_lane_invokes_are_signed_the_same_way(lane_run, credentials: str) -> None:
    """The reference: the Python lane's Invokes pass the same checks (so the checks themselves are sound)."""
    run = lane_run(credentials, "0")
    assert run.native_count() == 0
    for outcome in run.outcomes.values():
        assert len(outcome.invokes) == 1, f"{outcome.call.id}: {len(outcome.invokes)} Invokes"
        check_invoke(run, outcome, outcome.invokes[0])


@pytest.mark.parametrize("credentials", CREDENTIAL_SETS)
def test_native_lane_serves_every_warm_allow(lane_run, credentials: str) -> None:
    """Once the pools are warm (after the pause), every {} call is served natively, also right after a call whose
    answer the Python lane decided; a call is counted at most once.  (Whether a non-{} answer counts as native is
    left open: the lane may write a terminate the Python lane rendered.)"""
    run = lane_run(credentials, "1")
    assert all(o.native in (0, 1) for o in run.outcomes.values()), {i: o.native for i, o in run.outcomes.items()}
    missed = [o.call.id for o in run.outcomes.values() if o.call.warm and not o.native]
    assert not missed, f"pools warm and the answer {{}}, yet not served natively: {missed}"


# ---------------------------------------------------------------------------------------------------------------
# 2. Lane equivalence
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", CORPUS, ids=[c.id for c in CORPUS])
@pytest.mark.parametrize("credentials", CREDENTIAL_SETS)
def test_both_lanes_send_the_same_invoke_answer_and_backend_request(lane_run, credentials: str, call: Call) -> None:
    """Invoke (request line, header lines in order, Content-Length, body), client answer and backend request are the
    same in both lanes, up to the date, the signature and the message id; the status is the one stated."""
    python, native = lane_run(credentials, "0").outcomes[call.id], lane_run(credentials, "1").outcomes[call.id]
    for outcome in (python, native):
        assert outcome.answer.status == call.status, client_view(outcome)
        assert len(outcome.invokes) == 1 and len(outcome.backend) == call.reaches_backend
    assert [invoke_view(r) for r in native.invokes] == [invoke_view(r) for r in python.invokes]
    assert client_view(native) == client_view(python)
    assert [backend_view(r) for r in native.backend] == [backend_view(r) for r in python.backend]


@pytest.mark.parametrize("lane", ["0", "1"])
@pytest.mark.parametrize("credentials", CREDENTIAL_SETS)
def test_function_and_backend_see_one_fresh_message_id_per_call(lane_run, credentials: str, lane: str) -> None:
    """The masheryMessageId in the Invoke body is a canonical v4 UUID, a new one per call, and the backend
    receives the same value in X-Mashery-Message-ID."""
    run = lane_run(credentials, lane)
    seen = set()
    for outcome in run.outcomes.values():
        mid = message_id_of(outcome.invokes[0])
        assert UUID4.fullmatch(mid), (outcome.call.id, mid)
        assert mid not in seen, (outcome.call.id, mid)
        seen.add(mid)
        for received in outcome.backend:
            _, headers = parse_head(received.head)
            assert single(headers, "x-mashery-message-id") == mid, outcome.call.id


# ---------------------------------------------------------------------------------------------------------------
# 3. Answers other than {}: the Python lane decides, with the one Invoke the native lane made
# ---------------------------------------------------------------------------------------------------------------


_XML_500 = b"<h1>InvalidResponseFromAWSLambdaInPreProcess</h1>"
# call id -> the client answer the contract gives: (status, headers it must carry, exact body)
EXPECTED_OTHER: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {
    "answer-terminate": (403, [(b"x-denied-by", b"lambda")], b"<h1>Denied by the function</h1>"),
    "answer-modify": (200, [(b"x-backend", b"plain")], b"backend answer\n"),
    "answer-fn-error": (502, [(b"content-type", b"application/json")],
                        b'{"code":502,"message":{"detail":"boom","title":"ValueError"}}'),
    "answer-aws-500": (500, [(b"x-error-detail-header", b"boom")], _XML_500),
    "answer-empty": (500, [(b"x-error-detail-header", b"AWS Lambda Response is not returned")], _XML_500),
    "head-terminate": (403, [(b"x-denied-by", b"lambda")], b""),
}


@pytest.mark.parametrize("call_id", list(EXPECTED_OTHER))
@pytest.mark.parametrize("credentials", CREDENTIAL_SETS)
def test_other_answers_are_decided_once_with_the_lambdas_answer(lane_run, credentials: str, call_id: str) -> None:
    """terminate, modify, X-Amz-Function-Error, an AWS 500 and an empty body: one Invoke per client call in each
    lane, the same client answer in both, and the answer the contract gives for it.  In the native run the Invoke
    came on one of the native lane's own Lambda connections (the ones its counted calls used): the lane made the
    call and handed the answer over; the Python lane did not invoke again."""
    python, native = lane_run(credentials, "0"), lane_run(credentials, "1")
    status, headers, body = EXPECTED_OTHER[call_id]
    for run in (python, native):
        outcome = run.outcomes[call_id]
        assert len(outcome.invokes) == 1, f"lane {run.lane}: {len(outcome.invokes)} Invokes for one call"
        assert function_name(outcome.invokes[0].head) == outcome.call.function
        assert outcome.answer.status == status, client_view(outcome)
        for name, value in headers:
            assert outcome.answer.header(name) == [value], client_view(outcome)
        assert outcome.answer.body == body, client_view(outcome)
    assert client_view(native.outcomes[call_id]) == client_view(python.outcomes[call_id])
    if call_id == "answer-modify":
        _, sent = parse_head(native.outcomes[call_id].backend[0].head)
        assert single(sent, "x-added") == "by-lambda" and single(sent, "x-drop-me") is None, sent
    native_conns = {r.conn for o in native.outcomes.values() if o.native for r in o.invokes}
    assert native.outcomes[call_id].invokes[0].conn in native_conns, \
        "the native lane did not make this Invoke (it came on a connection no native call used)"
