"""Python 3.9: an asyncio Redis client built at its first call, inside the loop that makes it.

What belongs here: ``LateClient``, the stand-in ``AsyncRedisStore.from_url`` gives the store
when it is called outside a running event loop on Python 3.9, and the test for that case.
redis-py's asyncio clients create ``asyncio.Lock`` objects as they are built, and before
Python 3.10 a lock belongs to the loop that is current at that moment
(``asyncio.get_event_loop()``). A client built before ``asyncio.run`` or uvicorn starts its
loop then fails at once ("There is no current event loop"), or worse, when two tasks first
wait on the same lock, from the loop that really runs ("attached to a different loop"), which
the store would read as Redis being down. The stand-in keeps the URL and the options and
builds the real client at the first attribute the store reads from inside its loop.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Optional


def needs_late_client() -> bool:
    """Whether a client built now would bind its locks to the wrong loop (3.9, no loop runs)."""
    if sys.version_info >= (3, 10):
        return False
    import asyncio  # pragma: no cover - loaded here so that importing the metrics stays light

    try:  # pragma: no cover - Python 3.9 only; scripts/test.sh runs 3.9 without coverage
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


class LateClient:
    """Builds ``connect(url, **options)`` when the store first uses it, then forwards to it.

    Args:
        connect: the client class's ``from_url``.
        url: the Redis URL.
        options: the keyword arguments for ``connect``.
        cluster: whether ``connect`` makes a cluster client (the store asks before any call).
    """

    __slots__ = ("_client", "_connect", "_options", "is_cluster", "url")

    def __init__(
        self, connect: Callable[..., Any], url: str, options: Dict[str, Any], cluster: bool
    ) -> None:
        self._connect = connect
        self.url = url
        self._options = options
        self.is_cluster = cluster
        self._client: Optional[Any] = None

    def built(self) -> Any:
        """The real client, built now if this is its first use (call it inside the loop)."""
        if self._client is None:
            self._client = self._connect(self.url, **self._options)
        return self._client

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Forward to the real client (named here so the store sees an async client)."""
        return await self.built().execute_command(*args, **options)

    def evalsha(self, *args: Any) -> Any:
        """Forward to the real client."""
        return self.built().evalsha(*args)

    async def aclose(self) -> None:
        """Close the real client if it was ever built."""
        if self._client is not None:
            await self._client.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.built(), name)
