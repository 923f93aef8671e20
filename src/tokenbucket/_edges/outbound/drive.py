"""One request through a limited client: gate, reserve, send, follow the answer, maybe retry.

Knows: the order of the steps every shell takes, in a threaded form (`drive`) and an awaitable
one (`adrive`). Must not know: any HTTP library; the shell passes ``send`` (one attempt),
``inspect`` (a response's status and header pairs) and ``discard`` (close a response that is
retried).
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, List, Tuple, TypeVar

from .follow import AsyncGate, Follower, Gate

R = TypeVar("R")
Inspect = Callable[[Any], Tuple[int, List[Tuple[str, str]]]]


def overslept(follower: Follower, started: float, waited: float) -> bool:
    """Whether a wait for a token ended later than planned by more than the headroom.

    A process that stalls (a loaded machine, a long garbage collection) wakes every waiter
    whose turn passed at once; sent together, they would reach a server whose bucket stopped
    refilling when it was full. Such a waiter gives its token back and takes a new turn.
    """
    return waited > 0 and time.monotonic() - started - waited > max(follower.headroom, 0.01)


def drive(
    follower: Follower,
    gate: Gate,
    key: str,
    method: str,
    send: Callable[[], R],
    inspect: Inspect,
    discard: Callable[[R], Any],
) -> R:
    """Send one request under ``key``'s budget; retry a 429/503 as the options allow.

    Raises [`RateLimitExceeded`][tokenbucket.RateLimitExceeded] if the local wait would
    exceed ``max_wait``; a response that is not retried is returned as it came.
    """
    retries = follower.retries(method)
    probe = follower.follow_server and gate.enter(key)
    try:
        attempt = 0
        while True:
            started = time.monotonic()
            waited = follower.registry.acquire(key, max_wait=follower.max_wait)
            if overslept(follower, started, waited):
                follower.registry.refund(key, 1)
                follower.registry.acquire(key, max_wait=follower.max_wait)
            sent = time.monotonic()
            response = send()
            status, headers = inspect(response)
            plan = follower.plan(key, status, headers, time.monotonic() - sent)
            follower.apply(key, plan)
            if probe:
                probe = False
                gate.leave(key, True)
            if plan.retry is None or attempt >= retries or plan.retry > follower.max_wait:
                return response
            discard(response)
            attempt += 1
    finally:
        if probe:
            gate.leave(key, False)


async def adrive(
    follower: Follower,
    gate: AsyncGate,
    key: str,
    method: str,
    send: Callable[[], Awaitable[R]],
    inspect: Inspect,
    discard: Callable[[R], Awaitable[Any]],
) -> R:
    """Awaitable `drive`: a task cancelled while it waits gives its reservation back."""
    retries = follower.retries(method)
    probe = follower.follow_server and await gate.enter(key)
    try:
        attempt = 0
        while True:
            started = time.monotonic()
            waited = await follower.registry.aacquire(key, max_wait=follower.max_wait)
            if overslept(follower, started, waited):
                await follower.registry.arefund(key, 1)
                await follower.registry.aacquire(key, max_wait=follower.max_wait)
            sent = time.monotonic()
            response = await send()
            status, headers = inspect(response)
            plan = follower.plan(key, status, headers, time.monotonic() - sent)
            await follower.aapply(key, plan)
            if probe:
                probe = False
                gate.leave(key, True)
            if plan.retry is None or attempt >= retries or plan.retry > follower.max_wait:
                return response
            await discard(response)
            attempt += 1
    finally:
        if probe:
            gate.leave(key, False)
