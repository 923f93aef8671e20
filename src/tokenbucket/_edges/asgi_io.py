"""The ASGI edge's I/O: scopes and messages to and from ``tokenbucket._http``, admin bodies.

What belongs here: the request view of a scope and its header fields, the encoding and sending
of a `Response` (and of a WebSocket handshake's refusal), the ``send`` and ``receive`` that
carry out a plan's steps around the app (adding the rate-limit fields, settling the cost,
releasing the in-flight slot), reading an admin request's body as its `AdminRequest` says,
and making its operation's registry calls (awaited when the store is async). It must not know
the middleware class, the options or the decisions (``tokenbucket._http`` makes them); it
imports no framework.
"""

from __future__ import annotations

from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    MutableMapping,
    Optional,
    Tuple,
    Union,
)

from .._http.admin import AdminRequest
from .._http.admin_op import AdminOp
from .._http.headers import RAW_OWN_FIELDS, RAW_OWN_INITIALS, HeaderList, Response, add_fields
from .._http.paths import route_path
from .._http.request import RequestView
from .._http.rules import RulesOp
from .._http.settle import Settlement
from .._registry.inflight import InFlightLimit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_RawHeaders = List[Tuple[bytes, bytes]]


def _with_fields(send: Send, fields: _RawHeaders) -> Send:
    """``send``, adding the rate-limit ``fields`` the app did not set to its response start."""

    async def send_with_fields(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = add_fields(
                message.get("headers"), fields, RAW_OWN_FIELDS, RAW_OWN_INITIALS
            )
        await send(message)

    return send_with_fields


def _settling(
    send: Send, settlement: Settlement, at_end: bool, is_async: bool
) -> Tuple[Send, Callable[[], Awaitable[None]]]:
    """``send``, settling the request's cost from its response; and the settling call.

    The cost is read (``settle``) when the response starts and settled then, or with
    ``at_end`` after its last body message. The settling call, made again however the
    request ends (a disconnect, an exception, a cancellation), settles what the response
    said if that has not happened yet; it settles once.
    """

    async def settle() -> None:
        actual = settlement.due()
        if actual is not None:
            if is_async:
                await settlement.reservation.asettle(actual)
            else:
                settlement.reservation.settle(actual)

    async def send_settling(message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            settlement.said(message["status"], _decode_fields(message.get("headers")))
            if not at_end:
                await settle()
        await send(message)
        if at_end and kind == "http.response.body" and not message.get("more_body"):
            await settle()

    return send_settling, settle


async def _hold(in_flight: InFlightLimit, key: str) -> Optional[Callable[[], Awaitable[None]]]:
    """Take one of ``key``'s in-flight slots; the call that releases it, or None if none is free.

    The release is done once, however often it is called.
    """
    is_async = in_flight.is_async
    slot = await in_flight.aacquire(key) if is_async else in_flight.acquire(key)
    if slot is None:
        return None
    held = slot

    async def release() -> None:
        if held.held:
            if is_async:
                await in_flight.arelease(held)
            else:
                in_flight.release(held)

    return release


def _releasing(
    send: Send, receive: Receive, release: Callable[[], Awaitable[None]]
) -> Tuple[Send, Receive]:
    """``send`` and ``receive``, releasing the request's in-flight slot once it is done.

    Done: when the last body message is sent, or when the app reads ``http.disconnect``.
    ``release`` releases the slot if it is still held.
    """

    async def send_then_release(message: Message) -> None:
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            await release()  # the response is complete: the request no longer counts

    async def receive_then_release() -> Message:
        message = await receive()
        if message["type"] == "http.disconnect":
            await release()  # the client is gone: nothing more of this request reaches it
        return message

    return send_then_release, receive_then_release


async def _refuse_handshake(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    """Refuse a WebSocket handshake: with ``response`` where the server can send one."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client left before the handshake completed
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": response.status,
                "headers": _encode(response.headers),
            }
        )
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        # Before the accept, the server answers the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": "Rate limit exceeded"})


async def _answer_admin(admin: AdminRequest, receive: Receive, is_async: bool) -> Response:
    """The answer to an authorised admin request: its body read, its calls made, audited."""
    body = await _read_body(receive, admin.limit) if admin.limit else b""
    op = admin.operation(body)
    if isinstance(op, Response):
        return op
    results = await _run(op, is_async)
    return admin.answer(op, results)


async def _run(op: Union[AdminOp, RulesOp], is_async: bool) -> Union[List[Any], Exception]:
    """Make the registry calls of ``op`` (awaited when the store is async); their results.

    A ``ConnectionError`` (or a ValueError: a cursor of another store, a Redis Cluster
    that cannot list) stops them and is returned instead.
    """
    prefix = "a" if is_async else ""
    results = []
    try:
        for registry, name, args, kwargs in op.steps():
            result = getattr(registry, prefix + name)(*args, **kwargs)
            results.append(await result if prefix else result)
    except (ConnectionError, ValueError) as exc:
        return exc
    return results


def _decode_headers(scope: Scope) -> Dict[str, str]:
    return _decode_fields(scope.get("headers"))


def _decode_fields(fields: Optional[Iterable[Tuple[bytes, bytes]]]) -> Dict[str, str]:
    headers: Dict[str, str] = {}
    for raw_name, raw_value in fields or ():
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous}, {value}"
    return headers


def _view(scope: Scope) -> RequestView:
    client = scope.get("client")
    root_path = scope.get("root_path")
    query = scope.get("query_string")
    return RequestView(
        scope.get("method", "GET"),
        scope.get("scheme") or ("ws" if scope["type"] == "websocket" else "http"),
        route_path(scope["path"], root_path) if root_path else scope["path"],
        query.decode("latin-1") if query else "",
        client[0] if client else None,
        scope,
        _decode_headers,
    )


def _encode(fields: HeaderList) -> _RawHeaders:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in fields]


async def _send_response(send: Send, response: Response) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": _encode(response.headers),
        }
    )
    await send({"type": "http.response.body", "body": response.body})


async def _read_body(receive: Receive, limit: int) -> Optional[bytes]:
    """Read the request body, stopping once it is over ``limit`` bytes; None if cut short."""
    chunks: List[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # disconnected: never act on part of a request
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit or not message.get("more_body", False):
            return b"".join(chunks)
