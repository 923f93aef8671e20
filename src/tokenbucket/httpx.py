"""httpx transports that call a rate-limited API at its limit, never past it.

    import httpx
    from tokenbucket.httpx import RateLimitedTransport, AsyncRateLimitedTransport

    client = httpx.Client(transport=RateLimitedTransport(limit="10/second"))
    async_client = httpx.AsyncClient(transport=AsyncRateLimitedTransport(limit="10/second"))

Every request waits for a token of its key (the host by default) before it is sent, first
come first served, with one sleep; every response's rate-limit fields tune the key's budget
(see [Calling rate-limited APIs](../outbound.md)). Needs the ``httpx`` extra.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Tuple

try:
    import httpx
except ModuleNotFoundError as _missing:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        f"{_missing}; tokenbucket.httpx needs the 'httpx' extra: "
        "pip install 'tokenbucket-ratelimit[httpx]'",
        name=_missing.name,
    ) from _missing

from ._edges.outbound.drive import adrive, drive
from ._edges.outbound.follow import IDEMPOTENT, AsyncGate, Follower, Gate, LocalLimit

__all__ = ["AsyncRateLimitedTransport", "RateLimitedTransport", "host_key"]


def host_key(request: httpx.Request) -> str:
    """The default key: the request's host and port (``"api.example.com:443"``)."""
    url = request.url
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


def _inspect(response: httpx.Response) -> Tuple[int, List[Tuple[str, str]]]:
    return response.status_code, response.headers.multi_items()


class _Options:
    """What both transports take; see `RateLimitedTransport`."""

    def __init__(
        self,
        limit: LocalLimit,
        key: Optional[Callable[[httpx.Request], str]],
        follow_server: bool,
        max_retries: int,
        max_wait: float,
        retry_methods: Iterable[str],
        headroom: float,
    ) -> None:
        if key is not None and not callable(key):
            raise TypeError(f"'key' must be a callable, got {key!r}")
        self._follower = Follower(
            limit,
            follow_server=follow_server,
            max_retries=max_retries,
            max_wait=max_wait,
            retry_methods=retry_methods,
            headroom=headroom,
        )
        self._key = key or host_key

    @property
    def registry(self) -> Any:
        """The [`BucketRegistry`][tokenbucket.BucketRegistry] holding the keys' budgets."""
        return self._follower.registry


class RateLimitedTransport(_Options, httpx.BaseTransport):
    """An httpx transport that spends each key's budget exactly, following the server's fields.

    Args:
        limit: the local limit: a [`Rule`][tokenbucket.Rule], a rate string (``"10/second"``)
            or a [`BucketRegistry`][tokenbucket.BucketRegistry] (several limits, or a Redis
            store shared by several processes).
        transport: the transport that sends the requests; a new ``httpx.HTTPTransport()``
            by default.
        key: a function of the ``httpx.Request`` returning its key (per API key, per
            endpoint); the host and port by default.
        follow_server: read every response's ``RateLimit``/``RateLimit-Policy``,
            ``X-RateLimit-*``, ``Retry-After`` and ``retry-after-ms`` fields: adopt a tighter
            server limit, pause the key when nothing remains, retry 429/503 after their wait.
            Needs a registry of one limit.
        max_retries: retries of a 429 or 503 that says when to come back (``retry_methods``
            only); after them the response is returned as it came.
        max_wait: the longest wait, in seconds, for the local budget (longer raises
            [`RateLimitExceeded`][tokenbucket.RateLimitExceeded]) or before a retry (longer:
            the response is returned as it came).
        retry_methods: the methods that are retried; the idempotent ones by default.
        headroom: seconds of the server's rate kept unused from its burst, to absorb network
            jitter (a request that arrives early would otherwise find the server one token short).
    """

    def __init__(
        self,
        limit: LocalLimit,
        *,
        transport: Optional[httpx.BaseTransport] = None,
        key: Optional[Callable[[httpx.Request], str]] = None,
        follow_server: bool = True,
        max_retries: int = 2,
        max_wait: float = 60.0,
        retry_methods: Iterable[str] = IDEMPOTENT,
        headroom: float = 0.25,
    ) -> None:
        super().__init__(limit, key, follow_server, max_retries, max_wait, retry_methods, headroom)
        self._transport = transport or httpx.HTTPTransport()
        self._gate = Gate(self._follower.max_wait)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` when its key has a token; follow and maybe retry the response."""

        def send() -> httpx.Response:
            return self._transport.handle_request(request)

        return drive(
            self._follower,
            self._gate,
            self._key(request),
            request.method,
            send,
            _inspect,
            httpx.Response.close,
        )

    def close(self) -> None:
        """Close the wrapped transport."""
        self._transport.close()


class AsyncRateLimitedTransport(_Options, httpx.AsyncBaseTransport):
    """`RateLimitedTransport` for ``httpx.AsyncClient``; waits with ``asyncio.sleep``.

    A task cancelled while it waits for its turn gives its reservation back. Takes the same
    arguments, ``transport`` being an ``httpx.AsyncBaseTransport`` (a new
    ``httpx.AsyncHTTPTransport()`` by default). A registry on an async store
    ([`AsyncRedisStore`][tokenbucket.redis.AsyncRedisStore]) is awaited for real.
    """

    def __init__(
        self,
        limit: LocalLimit,
        *,
        transport: Optional[httpx.AsyncBaseTransport] = None,
        key: Optional[Callable[[httpx.Request], str]] = None,
        follow_server: bool = True,
        max_retries: int = 2,
        max_wait: float = 60.0,
        retry_methods: Iterable[str] = IDEMPOTENT,
        headroom: float = 0.25,
    ) -> None:
        super().__init__(limit, key, follow_server, max_retries, max_wait, retry_methods, headroom)
        self._transport = transport or httpx.AsyncHTTPTransport()
        self._gate = AsyncGate(self._follower.max_wait)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` when its key has a token; follow and maybe retry the response."""

        async def send() -> httpx.Response:
            return await self._transport.handle_async_request(request)

        return await adrive(
            self._follower,
            self._gate,
            self._key(request),
            request.method,
            send,
            _inspect,
            httpx.Response.aclose,
        )

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._transport.aclose()
