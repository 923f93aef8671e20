"""A ``requests`` adapter that calls a rate-limited API at its limit, never past it.

    import requests
    from tokenbucket.requests import RateLimitedAdapter

    session = requests.Session()
    adapter = RateLimitedAdapter(limit="10/second")
    session.mount("https://", adapter)
    session.mount("http://", adapter)

The same behaviour as [`tokenbucket.httpx`][tokenbucket.httpx], from the same code: each
request waits for its key's token, each response's rate-limit fields tune the key's budget,
and a 429 or 503 that says when to come back is retried then. Needs the ``requests`` extra.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Tuple
from urllib.parse import urlsplit

try:
    import requests
    from requests.adapters import HTTPAdapter
except ModuleNotFoundError as _missing:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        f"{_missing}; tokenbucket.requests needs the 'requests' extra: "
        "pip install 'tokenbucket-ratelimit[requests]'",
        name=_missing.name,
    ) from _missing

from ._edges.outbound.drive import drive
from ._edges.outbound.follow import IDEMPOTENT, Follower, Gate, LocalLimit

__all__ = ["RateLimitedAdapter", "host_key"]


def host_key(request: requests.PreparedRequest) -> str:
    """The default key: the request's host and port (``"api.example.com:443"``)."""
    parts = urlsplit(request.url or "")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def _inspect(response: requests.Response) -> Tuple[int, List[Tuple[str, str]]]:
    return response.status_code, list(response.headers.items())


class RateLimitedAdapter(HTTPAdapter):
    """A transport adapter to mount on a ``requests.Session``; see `RateLimitedTransport`.

    Args:
        limit: the local limit: a [`Rule`][tokenbucket.Rule], a rate string (``"10/second"``)
            or a [`BucketRegistry`][tokenbucket.BucketRegistry].
        key: a function of the ``requests.PreparedRequest`` returning its key; the host and
            port by default.
        follow_server: follow the server's rate-limit fields (see
            [`RateLimitedTransport`][tokenbucket.httpx.RateLimitedTransport]).
        max_retries: retries of a 429 or 503 that says when to come back. (The adapter's own
            connection retries are urllib3's, given as ``connection_retries``.)
        max_wait: the longest wait for the local budget or before a retry, in seconds.
        retry_methods: the methods that are retried; the idempotent ones by default.
        headroom: seconds of the server's rate kept unused from its burst.
        connection_retries: ``HTTPAdapter``'s ``max_retries`` (connection failures).
        **adapter: the other ``HTTPAdapter`` arguments (``pool_connections``, ...).
    """

    def __init__(
        self,
        limit: LocalLimit,
        *,
        key: Optional[Callable[[requests.PreparedRequest], str]] = None,
        follow_server: bool = True,
        max_retries: int = 2,
        max_wait: float = 60.0,
        retry_methods: Iterable[str] = IDEMPOTENT,
        headroom: float = 0.25,
        connection_retries: Any = 0,
        **adapter: Any,
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
        self._gate = Gate(self._follower.max_wait)
        super().__init__(max_retries=connection_retries, **adapter)

    @property
    def registry(self) -> Any:
        """The [`BucketRegistry`][tokenbucket.BucketRegistry] holding the keys' budgets."""
        return self._follower.registry

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        """Send ``request`` when its key has a token; follow and maybe retry the response."""

        def attempt() -> requests.Response:
            return super(RateLimitedAdapter, self).send(request, **kwargs)

        return drive(
            self._follower,
            self._gate,
            self._key(request),
            request.method or "GET",
            attempt,
            _inspect,
            requests.Response.close,
        )
