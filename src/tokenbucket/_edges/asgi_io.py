"""The ASGI edge's I/O: scopes and messages to and from ``tokenbucket._http``, admin bodies.

What belongs here: the request view of a scope and its header fields, the encoding and sending
of a `Response`, the ``send`` that settles a request's cost from its response, reading and
parsing an admin request, and making an admin operation's registry calls (awaited when the
store is async). It must not know the middleware class, the options' checks or the rate-limit
decision (``tokenbucket.asgi`` holds those); it imports no framework.
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

from .._core.decision import Decision
from .._http.admin import AdminAPI
from .._http.admin_op import AdminOp
from .._http.headers import HeaderList, Response
from .._http.options import Limit, Options
from .._http.paths import route_path
from .._http.request import RequestView
from .._http.rules import RulesOp
from .._http.settle import Settlement

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_RawHeaders = List[Tuple[bytes, bytes]]


def _settling(
    options: Options, send: Send, view: RequestView, limit: Limit, decision: Decision
) -> Tuple[Send, Callable[[], Awaitable[None]]]:
    """``send``, settling the request's cost from its response; and the settling call.

    The cost is read (``settle``) when the response starts and settled then, or with
    ``settle_at="end"`` after its last body message. The settling call, made again however
    the request ends (a disconnect, an exception, a cancellation), settles what the
    response said if that has not happened yet; it settles once.
    """
    assert options.settle_func is not None
    policy, _, bucket, cost = limit
    settlement = Settlement(options.settle_func, view, policy.registry, bucket, cost, decision)
    at_end, is_async = options.settle_at_end, options.is_async

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
    return RequestView(
        scope.get("method", "GET"),
        scope.get("scheme") or ("ws" if scope["type"] == "websocket" else "http"),
        route_path(scope["path"], scope.get("root_path", "")),
        (scope.get("query_string") or b"").decode("latin-1"),
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


async def _admin_op(
    admin: AdminAPI, view: RequestView, receive: Receive
) -> Union[Response, AdminOp, RulesOp]:
    """Read and parse an authorised admin request: its operation, or the 4xx refusing it."""
    body = b""
    if admin.wants_body(view.method):
        limit = admin.limit_for(view.path)
        refused = admin.body_too_large(view.header("content-length"), limit)
        if refused is not None:
            return refused
        read = await _read_body(receive, admin, limit)
        if isinstance(read, Response):
            return read
        body = read
    return admin.parse(view.method, view.query_string, body, view.path)


async def _read_body(receive: Receive, admin: AdminAPI, limit: int) -> Union[bytes, Response]:
    """Read the request body; a 413 as soon as it is over the limit, a 400 if it is cut short."""
    chunks: List[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return admin.incomplete()  # disconnected: never act on part of a request
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return admin.too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
