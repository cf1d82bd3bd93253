"""The aiohttp-backed implementation of the pooled client interface (the fallback; see ``pool.py``).

Imported only when ``SIDECAR_GATEWAY_HTTP_CLIENT=aiohttp`` selects it (or a test/benchmark asks for it): aiohttp
costs ~20 MB of RSS per worker that the default httptools pool does not need.  Tuned for a proxy: no cookie jar,
no automatic decompression, no default headers we did not ask for, raw (already percent-encoded) URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType

import aiohttp
from yarl import URL

from .http11 import CONNECT_TIMEOUT_S, KEEPALIVE_TIMEOUT_S, ConnectError, ReadError

__all__ = ["AiohttpClient", "AiohttpResponse"]

# Bounds (style rule 12).
# CONNECT_TIMEOUT_S and KEEPALIVE_TIMEOUT_S are shared with the httptools pool (http11).
READ_CHUNK = 64 * 1024  # streaming chunk size: big enough to amortise a syscall, small enough to bound memory
MAX_FIELD_SIZE = 16 * 1024  # one response header line (aiohttp default 8190; Apache 8190, nginx 4-8k large buffers)


@contextlib.contextmanager
def _map_exceptions() -> Iterable[None]:  # type: ignore[misc]
    try:
        yield
    except (aiohttp.ClientConnectorError, aiohttp.ClientSSLError) as exc:  # includes certificate errors
        raise ConnectError(str(exc) or exc.__class__.__name__) from exc
    except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
        raise ReadError(str(exc) or exc.__class__.__name__) from exc


def _to_str_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


class AiohttpResponse:
    """A response whose head has arrived.  Read the body with ``read`` or ``iter_chunks``, then ``release``."""

    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status: int = resp.status
        self.headers: list[tuple[bytes, bytes]] = [(k.lower(), v) for k, v in resp.raw_headers]

    async def read(self) -> bytes:
        with _map_exceptions():
            try:
                return await self._resp.read()
            finally:
                self._resp.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        with _map_exceptions():
            try:
                async for chunk in self._resp.content.iter_chunked(READ_CHUNK):
                    yield chunk
            finally:
                self._resp.release()

    def release(self) -> None:
        self._resp.release()

    def close(self) -> None:
        """Drop the connection (used when the body is abandoned half-way)."""
        self._resp.close()

    async def __aenter__(self) -> AiohttpResponse:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if e is not None:
            self.close()
        else:
            self.release()


class AiohttpClient:
    """One pool of keep-alive connections for the whole process (created on the running loop)."""

    def __init__(self, *, limit: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self._connector = aiohttp.TCPConnector(
            limit=limit,  # 0 = no global cap: the endpoint timeout bounds waiting, not a pool queue
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_TIMEOUT_S,
            ssl=ssl_context if ssl_context is not None else True,  # certificates are verified
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S),
            max_field_size=MAX_FIELD_SIZE,
            requote_redirect_url=False,
        )
        self.requests = 0

    async def request(self, method: str, url: str, headers: Iterable[tuple[bytes, bytes]],
                      body: bytes | AsyncIterable[bytes] | None = None) -> AiohttpResponse:
        """Send a request; return when the response head has arrived.  ``url`` is absolute and already
        percent-encoded (it is sent as-is).  Redirects are never followed."""
        self.requests += 1
        with _map_exceptions():
            resp = await self._session.request(
                method,
                URL(url, encoded=True),
                headers=_to_str_headers(headers),
                data=body,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        return AiohttpResponse(resp)

    async def aclose(self) -> None:
        await self._session.close()

    def __repr__(self) -> str:
        conns = getattr(self._connector, "_conns", {})
        idle = sum(len(v) for v in conns.values())
        acquired = len(getattr(self._connector, "_acquired", ()))
        return f"<AiohttpClient requests={self.requests} active={acquired} idle={idle}>"
