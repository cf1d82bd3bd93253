"""Our SigV4 signer (``transports/sigv4.py``) is byte-identical to ``botocore.auth.SigV4Auth`` (contract §7.1)
and reproduces vectors of the official AWS Signature Version 4 test suite, intermediates included."""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from sidecar_gateway.transports import sigv4
from sidecar_gateway.transports.aws_lambda import invoke_url, lambda_endpoint

# The AWS test suite's credentials and instant (aws-sig-v4-test-suite, 2015-08-30 edition).
SUITE_ACCESS_KEY = "AKIDEXAMPLE"
SUITE_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_TIME = datetime(2015, 8, 30, 12, 36, 0, tzinfo=UTC)
SUITE_SCOPE = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
SUITE_TOKEN = (
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8Y"
    "UuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8"
    "YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2IC"
    "CR/oLxBA=="
)

FROZEN = datetime(2024, 5, 6, 7, 8, 9)  # naive UTC, as botocore's clock returns it
ACCESS_KEY = "ASIAEXAMPLEEXAMPLE12"
SECRET_KEY = "s3cr3t/Key+With=Odd/Chars0123456789abcd"
TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+/tok=="
FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:my-func:prod"


def _botocore_sign(method: str, url: str, headers: list[tuple[str, str]], body: bytes, *, access_key: str,
                   secret_key: str, token: str | None, region: str, service: str,
                   when: datetime) -> dict[str, str]:
    """Sign with botocore's SigV4Auth under a frozen clock; return the headers it added."""
    request = AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        request.headers[name] = value
    before = set(request.headers.keys())
    auth = SigV4Auth(BotoCredentials(access_key, secret_key, token), service, region)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        auth.add_auth(request)
    return {k: v for k, v in request.headers.items() if k not in before}


def _ours(method: str, url: str, headers: list[tuple[str, str]], body: bytes, *, access_key: str = ACCESS_KEY,
          secret_key: str = SECRET_KEY, token: str | None = TOKEN, region: str = "eu-west-1",
          service: str = "lambda", when: datetime = FROZEN) -> list[tuple[str, str]]:
    return sigv4.sign(method, url, headers, body, access_key=access_key, secret_key=secret_key,
                      session_token=token, region=region, service=service, timestamp=when)


# ---------------------------------------------------------------------------------------------------------------
# Equivalence with botocore.auth.SigV4Auth
# ---------------------------------------------------------------------------------------------------------------

LAMBDA_URL = invoke_url("https://lambda.eu-west-1.amazonaws.com", FUNCTION_ARN)

EQUIVALENCE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("invoke_request_response_with_token", dict(url=LAMBDA_URL, body=b'{"point":"PreProcessor"}',
                                                headers=[("X-Amz-Invocation-Type", "RequestResponse"),
                                                         ("Content-Type", "application/json")])),
    ("invoke_event_with_token", dict(url=LAMBDA_URL, body=b'{"a":1}',
                                     headers=[("X-Amz-Invocation-Type", "Event"),
                                              ("Content-Type", "application/json")])),
    ("invoke_empty_body", dict(url=LAMBDA_URL, body=b"", headers=[("X-Amz-Invocation-Type", "RequestResponse")])),
    ("invoke_without_token", dict(url=LAMBDA_URL, body=b"{}", token=None,
                                  headers=[("X-Amz-Invocation-Type", "RequestResponse")])),
    ("invoke_unqualified_name", dict(url=invoke_url("https://lambda.eu-west-1.amazonaws.com", "my-func"),
                                     body=b"{}", headers=[])),
    ("loopback_endpoint_with_port", dict(url=invoke_url("http://127.0.0.1:4566", FUNCTION_ARN), body=b"{}",
                                         headers=[("X-Amz-Invocation-Type", "Event")])),
    ("ipv6_endpoint", dict(url=invoke_url("http://[::1]:9001", FUNCTION_ARN), body=b"x", headers=[])),
    ("default_port_is_not_signed", dict(url="https://example.amazonaws.com:443/a/b", body=b"", headers=[])),
    ("non_ascii_body", dict(url=LAMBDA_URL, body='{"n":"café ☕"}'.encode(), headers=[])),
    ("header_values_trimmed_and_collapsed", dict(url=LAMBDA_URL, body=b"",
                                                 headers=[("My-Header", '  a   b\tc  '), ("X-Other", "v")])),
    ("unsigned_headers_skipped", dict(url=LAMBDA_URL, body=b"",
                                      headers=[("User-Agent", "x/1"), ("X-Amzn-Trace-Id", "Root=1"),
                                               ("Connection", "keep-alive"), ("X-Signed", "1")])),
    ("query_sorted", dict(url="https://example.amazonaws.com/p?b=2&a=1&a=0&c", body=b"", headers=[])),
    ("dot_segments_and_double_slashes", dict(url="https://example.amazonaws.com//a/./b/../c//", body=b"",
                                             headers=[])),
    ("other_service_and_region", dict(url="https://sts.us-east-1.amazonaws.com/", body=b"Action=AssumeRole",
                                      headers=[("Content-Type", "application/x-www-form-urlencoded")],
                                      service="sts", region="us-east-1")),
    ("timezone_aware_timestamp", dict(url=LAMBDA_URL, body=b"{}", headers=[],
                                      when=datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2))))),
    ("just_before_midnight", dict(url=LAMBDA_URL, body=b"{}", headers=[], when=datetime(2023, 12, 31, 23, 59, 59))),
]


@pytest.mark.parametrize(("name", "case"), EQUIVALENCE_CASES, ids=[c[0] for c in EQUIVALENCE_CASES])
def test_sign_matches_botocore_sigv4auth(name: str, case: dict[str, Any]) -> None:
    """For the same request and instant our headers equal the ones botocore adds, byte for byte."""
    token = case.get("token", TOKEN)
    region = case.get("region", "eu-west-1")
    service = case.get("service", "lambda")
    when = case.get("when", FROZEN)
    ours = _ours("POST", case["url"], case["headers"], case["body"], token=token, region=region,
                 service=service, when=when)
    expected = _botocore_sign("POST", case["url"], case["headers"], case["body"], access_key=ACCESS_KEY,
                              secret_key=SECRET_KEY, token=token, region=region, service=service,
                              when=when.astimezone(UTC) if when.tzinfo else when)
    assert dict(ours) == expected
    assert [k for k, _ in ours] == list(expected)  # same headers, same order


def test_sign_adds_security_token_only_with_a_session_token() -> None:
    """Permanent credentials sign without X-Amz-Security-Token; temporary ones sign it."""
    without = dict(_ours("POST", LAMBDA_URL, [], b"{}", token=None))
    with_token = dict(_ours("POST", LAMBDA_URL, [], b"{}"))
    assert "X-Amz-Security-Token" not in without
    assert with_token["X-Amz-Security-Token"] == TOKEN
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in with_token["Authorization"]
    assert "X-Amz-Content-SHA256" not in with_token  # botocore adds none for Lambda (checked below too)


def test_sign_uses_a_given_content_sha256_as_payload_hash() -> None:
    """A caller-supplied X-Amz-Content-SHA256 is signed and used as the payload hash, as botocore does."""
    headers = [("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")]
    ours = _ours("PUT", "https://example.amazonaws.com/k", headers, b"body")
    expected = _botocore_sign("PUT", "https://example.amazonaws.com/k", headers, b"body", access_key=ACCESS_KEY,
                              secret_key=SECRET_KEY, token=TOKEN, region="eu-west-1", service="lambda", when=FROZEN)
    assert dict(ours) == expected


@pytest.mark.parametrize("reserved", ["Authorization", "X-Amz-Date", "x-amz-security-token", "Date"])
def test_sign_refuses_headers_it_adds_itself(reserved: str) -> None:
    """Passing a header sign() produces is a programming error, not silently dropped."""
    with pytest.raises(ValueError, match="adds"):
        _ours("POST", LAMBDA_URL, [(reserved, "x")], b"")


# ---------------------------------------------------------------------------------------------------------------
# The real botocore Lambda client: path building, headers, signature
# ---------------------------------------------------------------------------------------------------------------


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _botocore_invoke(function_name: str, invocation_type: str, payload: bytes, token: str | None) -> Any:
    """Run ``lambda.invoke`` through botocore up to the wire and return the prepared request."""
    session = botocore.session.get_session()
    client = session.create_client("lambda", region_name="eu-west-1", aws_access_key_id=ACCESS_KEY,
                                   aws_secret_access_key=SECRET_KEY, aws_session_token=token,
                                   endpoint_url=None)

    def capture(request: Any, **_: Any) -> None:
        raise _Captured(request)

    client.meta.events.register("before-send.lambda.Invoke", capture)
    with mock.patch("botocore.auth.get_current_datetime", return_value=FROZEN), \
            pytest.raises(_Captured) as captured:
        client.invoke(FunctionName=function_name, InvocationType=invocation_type, Payload=payload)
    return captured.value.request


INVOKE_CASES = [
    (FUNCTION_ARN, "RequestResponse", b'{"point":"PreProcessor"}', TOKEN),
    (FUNCTION_ARN, "Event", b'{"point":"PostProcessor"}', TOKEN),
    (FUNCTION_ARN, "RequestResponse", b"", TOKEN),
    ("my-func:prod", "RequestResponse", b"{}", None),
    ("my-func", "Event", b"{}", TOKEN),
    ("arn:aws:lambda:eu-west-1:123456789012:function:fn_with.dots-and_underscores:$LATEST", "Event", b"[]", TOKEN),
]


@pytest.mark.parametrize(("function_name", "invocation_type", "payload", "token"), INVOKE_CASES)
def test_invoke_request_matches_botocore_lambda_client(function_name: str, invocation_type: str, payload: bytes,
                                                       token: str | None) -> None:
    """URL (FunctionName encoded once, twice in the canonical URI) and every signed header are what the real
    botocore Lambda client sends for Invoke."""
    sent = _botocore_invoke(function_name, invocation_type, payload, token)
    url = invoke_url(lambda_endpoint("eu-west-1", environ={}), function_name)
    assert url == sent.url
    assert sent.headers["X-Amz-Invocation-Type"] in (invocation_type, invocation_type.encode())
    headers = [("X-Amz-Invocation-Type", invocation_type)]
    ours = dict(_ours("POST", url, headers, payload, token=token))
    for name, value in ours.items():
        raw = sent.headers[name]
        assert (raw.decode() if isinstance(raw, bytes) else raw) == value, name
    assert "X-Amz-Content-SHA256" not in sent.headers  # Lambda Invoke: botocore adds no payload-hash header
    assert "Content-Type" not in sent.headers  # botocore sends none; §7.1 makes us add (and sign) one


def test_function_arn_is_encoded_once_in_url_and_twice_in_canonical_uri() -> None:
    """``my-func:prod`` → ``my-func%3Aprod`` on the wire, ``my-func%253Aprod`` in the canonical request."""
    url = invoke_url("https://lambda.eu-west-1.amazonaws.com", FUNCTION_ARN)
    assert url == ("https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/"
                   "arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Amy-func%3Aprod/invocations")
    assert sigv4.canonical_uri("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A1%3Afunction%3Amy-func%3Aprod"
                               "/invocations") == (
        "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aeu-west-1%253A1%253Afunction%253Amy-func%253Aprod"
        "/invocations")


def test_canonical_request_and_string_to_sign_match_botocore_intermediates() -> None:
    """The intermediate strings equal botocore's, not only the final signature."""
    url = LAMBDA_URL
    headers = [("X-Amz-Invocation-Type", "Event"), ("Content-Type", "application/json")]
    body = b'{"a":1}'
    amz = sigv4.amz_date(FROZEN)
    request = AWSRequest(method="POST", url=url, data=body)
    for name, value in [*headers, ("X-Amz-Date", amz), ("X-Amz-Security-Token", TOKEN)]:
        request.headers[name] = value
    request.context["timestamp"] = amz
    auth = SigV4Auth(BotoCredentials(ACCESS_KEY, SECRET_KEY, TOKEN), "lambda", "eu-west-1")
    expected_creq = auth.canonical_request(request)
    to_sign = sigv4.headers_to_sign([*headers, ("X-Amz-Date", amz), ("X-Amz-Security-Token", TOKEN)], url)
    ours_creq = sigv4.canonical_request("POST", sigv4.canonical_uri(url.split(".com", 1)[1]), "",
                                        sigv4.canonical_headers(to_sign), sigv4.signed_headers(to_sign),
                                        sigv4.hashed_payload(body))
    assert ours_creq == expected_creq
    scope = sigv4.credential_scope(amz[:8], "eu-west-1", "lambda")
    assert scope == auth.credential_scope(request)
    ours_sts = sigv4.string_to_sign(amz, scope, ours_creq)
    assert ours_sts == auth.string_to_sign(request, expected_creq)
    key = sigv4.signing_key(SECRET_KEY, amz[:8], "eu-west-1", "lambda")
    assert sigv4.signature(key, ours_sts) == auth.signature(ours_sts, request)


def test_signing_key_is_derived_once_per_day_region_service() -> None:
    """Signing twice on the same day reuses the derived key (style rule 8)."""
    sigv4.signing_key.cache_clear()
    _ours("POST", LAMBDA_URL, [], b"{}")
    _ours("POST", LAMBDA_URL, [], b"{}", when=FROZEN + timedelta(hours=1))
    assert sigv4.signing_key.cache_info().misses == 1
    _ours("POST", LAMBDA_URL, [], b"{}", when=FROZEN + timedelta(days=1))
    assert sigv4.signing_key.cache_info().misses == 2


def test_debug_log_never_shows_secret_token_or_authorization(caplog: pytest.LogCaptureFixture) -> None:
    """Canonical request and string to sign are debug-logged; secret, token and signature are not."""
    with caplog.at_level("DEBUG", logger="sidecar_gateway.transports.sigv4"):
        added = dict(_ours("POST", LAMBDA_URL, [("X-Amz-Invocation-Type", "Event")], b"{}"))
    text = caplog.text
    assert "CanonicalRequest" in text and "StringToSign" in text
    assert SECRET_KEY not in text
    assert TOKEN not in text
    assert added["Authorization"] not in text
    assert added["Authorization"].rsplit("Signature=", 1)[1] not in text


# ---------------------------------------------------------------------------------------------------------------
# Official AWS Signature Version 4 test-suite vectors (us-east-1, service "service", 2015-08-30T12:36:00Z)
# ---------------------------------------------------------------------------------------------------------------

AWS_SUITE = [
    # name, method, url, headers, creq hash in the .sts (None: not checked), signature of the .authz
    ("get-vanilla", "GET", "https://example.amazonaws.com/", [], None, None,
     "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("post-vanilla", "POST", "https://example.amazonaws.com/", [], None,
     "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87",
     "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ("get-vanilla-query-order-key-case", "GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1", [],
     None, None, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("post-header-value-case", "POST", "https://example.amazonaws.com/", [("My-Header1", "VALUE1")], None,
     "d51ced243e649e3de6ef63afbbdcbca03131a21a7103a1583706a64618606a93",
     "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"),
    ("get-header-value-trim", "GET", "https://example.amazonaws.com/",
     [("My-Header1", " value1"), ("My-Header2", ' "a   b   c"')], None, None,
     "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
    ("post-sts-header-before", "POST", "https://example.amazonaws.com/", [], SUITE_TOKEN, None,
     "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"),
]

POST_VANILLA_CREQ = (
    "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)


@pytest.mark.parametrize(("name", "method", "url", "headers", "token", "creq_hash", "expected"), AWS_SUITE,
                         ids=[c[0] for c in AWS_SUITE])
def test_aws_test_suite_vector(name: str, method: str, url: str, headers: list[tuple[str, str]],
                               token: str | None, creq_hash: str | None, expected: str) -> None:
    """The AWS suite's .authz (and .sts digest where listed) are reproduced."""
    added = dict(sigv4.sign(method, url, headers, b"", access_key=SUITE_ACCESS_KEY, secret_key=SUITE_SECRET_KEY,
                            session_token=token, region="us-east-1", service="service", timestamp=SUITE_TIME))
    assert added["X-Amz-Date"] == "20150830T123600Z"
    assert added["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={SUITE_SCOPE}, SignedHeaders=")
    assert added["Authorization"].endswith(f", Signature={expected}")
    if creq_hash is not None:
        to_sign = sigv4.headers_to_sign([*headers, ("X-Amz-Date", "20150830T123600Z")], url)
        creq = sigv4.canonical_request(method, "/", "", sigv4.canonical_headers(to_sign),
                                       sigv4.signed_headers(to_sign), sigv4.EMPTY_SHA256_HASH)
        assert hashlib.sha256(creq.encode()).hexdigest() == creq_hash
        sts = sigv4.string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", creq)
        assert sts.endswith(creq_hash)


def test_aws_test_suite_post_vanilla_canonical_request() -> None:
    """post-vanilla.creq, verbatim."""
    to_sign = sigv4.headers_to_sign([("X-Amz-Date", "20150830T123600Z")], "https://example.amazonaws.com/")
    creq = sigv4.canonical_request("POST", sigv4.canonical_uri("/"), sigv4.canonical_query_string(""),
                                   sigv4.canonical_headers(to_sign), sigv4.signed_headers(to_sign),
                                   sigv4.hashed_payload(b""))
    assert creq == POST_VANILLA_CREQ


# ---------------------------------------------------------------------------------------------------------------
# PreparedSigner (the Lambda transport's per-call signer) and the cached-pad HMAC: the same bytes as sign()
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "case"), EQUIVALENCE_CASES, ids=[c[0] for c in EQUIVALENCE_CASES])
@pytest.mark.parametrize("token", [TOKEN, None, "  spaced   token  "], ids=["token", "no-token", "spaced-token"])
def test_prepared_signer_adds_exactly_what_sign_adds(name: str, case: dict[str, Any], token: str | None) -> None:
    region = case.get("region", "eu-west-1")
    service = case.get("service", "lambda")
    signer = sigv4.PreparedSigner("POST", case["url"], case["headers"])
    for when in (case.get("when", FROZEN), datetime(2031, 2, 3, 4, 5, 6, 789, tzinfo=UTC)):
        expected = _ours("POST", case["url"], case["headers"], case["body"], token=token, region=region,
                         service=service, when=when)
        got = signer.sign(case["body"], access_key=ACCESS_KEY, secret_key=SECRET_KEY, session_token=token,
                          region=region, service=service, timestamp=when)
        assert got == expected


def test_prepared_signer_refuses_what_sign_refuses_and_a_given_payload_hash() -> None:
    with pytest.raises(ValueError, match="adds"):
        sigv4.PreparedSigner("POST", LAMBDA_URL, [("Authorization", "x")])
    with pytest.raises(ValueError, match="payload hash"):
        sigv4.PreparedSigner("POST", LAMBDA_URL, [("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")])


@pytest.mark.parametrize("key_length", [0, 1, 32, 63, 64, 65, 200])
def test_signature_is_hmac_sha256_for_keys_of_any_length(key_length: int) -> None:
    key = os.urandom(key_length)
    for message in ("", "AWS4-HMAC-SHA256\n20240506T070809Z\nscope\nabc", "é☕" * 100):
        assert sigv4.signature(key, message) == hmac.new(key, message.encode(), hashlib.sha256).hexdigest()
