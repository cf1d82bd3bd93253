"""The pooled keep-alive HTTP/1.1 client behind a tiny interface of our own.

Used by the proxy (backend calls) and by the ``http`` and ``aws-lambda`` transports.  The interface
(``HttpClient.request`` → ``HttpResponse``) is what the rest of the code sees.  Two implementations:

* ``fastpool.HttpClient`` (default): our own pool on ``httptools`` + asyncio protocols (performance issue: the
  upstream client was the gateway's bottleneck).
* ``AiohttpClient`` (``aiohttp_client.py``, imported only when selected): aiohttp, tuned for a proxy:
  no cookie jar, no automatic decompression, no default headers we did not ask for, raw (already
  percent-encoded) URLs.  Selected with ``SIDECAR_GATEWAY_HTTP_CLIENT=aiohttp`` (read once, at import).

Both raise the same classes (defined in ``http11``): ``ConnectError`` (nothing was exchanged with the server:
refused, DNS, TLS) and ``ReadError`` (the exchange broke: reset, malformed answer, truncated body), translated
from foreign exceptions at this edge (httpcore ``map_exceptions``).  Timeouts are the caller's: wrap calls in
``asyncio.timeout``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import fastpool
from .http11 import ConnectError, ReadError, TransportError

__all__ = [
    "CLIENT_ENV",
    "ConnectError",
    "HttpClient",
    "HttpResponse",
    "ReadError",
    "TransportError",
]

CLIENT_ENV = "SIDECAR_GATEWAY_HTTP_CLIENT"  # "aiohttp" selects the fallback; anything else the httptools pool


def __getattr__(name: str) -> Any:
    """``pool.AiohttpClient`` / ``pool.AiohttpResponse`` import aiohttp on first use only."""
    if name in ("AiohttpClient", "AiohttpResponse"):
        from . import aiohttp_client

        return getattr(aiohttp_client, name)
    raise AttributeError(name)


if TYPE_CHECKING:  # callers annotate with the default implementation; both have the same interface
    from .fastpool import HttpClient, HttpResponse
elif os.environ.get(CLIENT_ENV, "").strip().lower() == "aiohttp":
    from .aiohttp_client import AiohttpClient as HttpClient
    from .aiohttp_client import AiohttpResponse as HttpResponse
else:
    HttpClient, HttpResponse = fastpool.HttpClient, fastpool.HttpResponse
