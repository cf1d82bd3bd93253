"""The native lane never reads a request body as a request (docs/native-lane.md).

The lane looks at a read only when the connection is between messages.  A request the Python lane answered
before its body arrived (here: a 404 for an unknown path, answered from the head alone) still has body bytes to
come on the connection, and whatever they look like — here, a complete plain GET for a native endpoint — they
are that body: the backend must never see them as a request, and the client must get no second answer."""

from __future__ import annotations

import socket
import time
import uuid

import requests

from support.backend import BackendServer
from support.gateway_proc import GatewayProcess, config, endpoint, service


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before an answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_body_bytes_after_an_early_answer_are_never_a_request(gateway_factory, backend: BackendServer) -> None:
    gw: GatewayProcess = gateway_factory.start(config(service(
        "svc-native-body", endpoint("ep-plain", "/plain", backend.url("/be"), key_required=False))))
    session = requests.Session()
    session.trust_env = False
    for _ in range(5):  # the native pool to the backend warms up behind these
        assert session.get(gw.base_url + "/plain/warm", timeout=10).status_code == 200
    time.sleep(0.3)
    assert session.get(gw.base_url + "/plain/warm", timeout=10).status_code == 200

    token = uuid.uuid4().hex
    smuggled = f"GET /plain/{token} HTTP/1.1\r\nHost: {gw.host}:{gw.port}\r\n\r\n".encode()
    with socket.create_connection((gw.host, gw.port), timeout=5) as sock:
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n\r\n"
                     % (gw.host.encode(), gw.port, len(smuggled)))
        assert _read_answer(sock).startswith(b"HTTP/1.1 404 ")
        sock.sendall(smuggled)  # the body, sent once the answer is complete
        sock.settimeout(1.0)
        try:
            extra = sock.recv(65536)
        except TimeoutError:
            extra = b""
    assert extra == b"", f"a second answer came: {extra[:200]!r}"
    time.sleep(0.2)
    assert backend.matching(token) == []
