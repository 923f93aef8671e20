"""AsyncRedisStore's pipelining: concurrent decisions' EVALSHAs share round trips.

Only the async store's decisions go through a ``Pipeliner`` (``tokenbucket.redis`` drives the
plans); it knows nothing of the script or the policy: it makes an EVALSHA call and hands back
its reply or its error, as the client would.
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional, Set, Tuple

import redis.exceptions

#: The most decisions one pipeline carries; more in one loop iteration start another.
PIPELINE_MAX = 256

_Pending = List[Tuple[Tuple[Any, ...], "Optional[asyncio.Future[Any]]"]]


class Pipeliner:
    """Sends the EVALSHAs that decisions start in one event-loop iteration as one pipeline.

    A call made while no other is in flight goes at once, alone, as without pipelining (a
    lone task pays nothing). Otherwise the first call of an iteration (the leader) opens a
    batch and yields to the loop once; the calls made meanwhile join it (up to
    ``PIPELINE_MAX``). A task that belongs to no caller sends the batch as one pipeline and
    gives each caller its own reply or its own error (``raise_on_error=False``), so each plan
    goes on as if it had made the call alone: NOSCRIPT reloads the script, a connection error
    follows the failure policy and feeds the breaker, decision by decision. A cancelled
    caller only drops its call (if not sent yet) or its reply; a leader cancelled while it
    waits leaves the others' calls to the task. If the task itself is cancelled (the loop
    shutting down), each caller still waiting gets a ``RedisError`` that is no outage, so its
    decision follows ``on_error`` without opening the breaker.
    """

    __slots__ = ("_busy", "_client", "_pending", "_tasks")

    def __init__(self, client: Any) -> None:
        self._client = client
        self._busy = 0  # calls and pipelines in flight
        self._pending: Optional[_Pending] = None
        self._tasks: Set[asyncio.Task[None]] = set()  # strong references while they run

    async def call(self, args: Tuple[Any, ...]) -> Any:
        """Make ``EVALSHA *args`` alone or in the current iteration's batch; return its reply."""
        pending = self._pending
        if pending is not None:  # join the batch a leader opened in this iteration
            future = asyncio.get_running_loop().create_future()
            pending.append((args, future))
            if len(pending) >= PIPELINE_MAX:
                self._pending = None
            return await future
        if self._busy:  # others in flight: lead a batch of the calls made meanwhile
            pending = self._pending = [(args, None)]
            try:
                await asyncio.sleep(0)  # one loop iteration: the others' calls join
            except BaseException:  # cancelled: this call is not made; the others' calls are
                del pending[0]
                self._close(pending)
                raise
            if len(pending) > 1:
                future = asyncio.get_running_loop().create_future()
                pending[0] = (args, future)
                self._close(pending)
                return await future
            self._close(pending)
        self._busy += 1
        try:
            return await self._client.evalsha(*args)
        finally:
            self._busy -= 1

    def _close(self, batch: _Pending) -> None:
        """Let no more calls join ``batch``; start the task that sends it for its waiters."""
        if self._pending is batch:
            self._pending = None
        if any(future is not None for _, future in batch):
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(lambda task: self._sent(batch, task))

    def _sent(self, batch: _Pending, task: asyncio.Task[None]) -> None:
        """Answer the callers the sending task did not (it was cancelled, maybe unstarted)."""
        self._tasks.discard(task)
        for _, future in batch:
            if future is not None and not future.done():
                future.set_exception(
                    redis.exceptions.RedisError("the pipeline carrying this call was cancelled")
                )

    async def _send(self, batch: _Pending) -> None:
        """Send ``batch`` as one pipeline (one call alone); settle each caller's future."""
        live = [(args, future) for args, future in batch if future and not future.done()]
        if not live:
            return
        replies: List[Any]
        self._busy += 1
        try:
            if len(live) == 1:
                replies = [await self._client.evalsha(*live[0][0])]
            else:
                pipe = self._client.pipeline(transaction=False)
                for args, _ in live:
                    pipe.execute_command("EVALSHA", *args)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as failure:  # the whole batch met it: each decision gets it
            replies = [failure] * len(live)
        finally:
            self._busy -= 1
        for (_, future), reply in zip(live, replies):
            if future.done():  # its caller was cancelled: the reply is dropped
                continue
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)
