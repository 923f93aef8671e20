"""The WSGI edge's I/O: reading the environ and the body, writing responses, running admin calls.

What belongs here: translating PEP 3333 to and from ``tokenbucket._http`` (the request view, the
path, the header fields), carrying out a plan's steps around the app (``start_response`` adding
the rate-limit fields and reading the cost to settle, holding the in-flight slot, the response
iterable that settles and releases when it is closed), reading an admin body and making an admin
operation's registry calls. It must not know the options, the decisions (``tokenbucket._http``
makes them) or the middleware class; it imports no framework.
"""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
    Union,
)

from .._http.admin import AdminRequest
from .._http.admin_op import AdminOp
from .._http.headers import OWN_FIELDS, OWN_INITIALS, HeaderList, Response, add_fields, status_line
from .._http.request import RequestView
from .._http.rules import RulesOp
from .._http.settle import Settlement
from .._registry.inflight import InFlightLimit

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def _with_fields(start_response: StartResponse, fields: HeaderList) -> StartResponse:
    """``start_response`` adding the rate-limit ``fields`` the app did not set itself."""

    def start_with_fields(
        status: str, headers: HeaderList, exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        combined = add_fields(headers, fields, OWN_FIELDS, OWN_INITIALS)
        if exc_info is None:
            return start_response(status, combined)
        return start_response(status, combined, exc_info)

    return start_with_fields


def _settling(
    start_response: StartResponse,
    settlement: Settlement,
    at_end: bool,
    release: Optional[Callable[[], None]] = None,
) -> Tuple[StartResponse, Callable[[], None]]:
    """``start_response``, settling the request's cost from the response; the finishing call.

    Read (``settle``) when the app starts its response, settled then or (``at_end``) when the
    server closes the response iterable, and in any case once, however the request ends (an
    app that starts its response again with ``exc_info`` does not settle it again). The
    finishing call settles what is due, then calls ``release`` (the in-flight slot's), if any.
    """

    def settle() -> None:
        actual = settlement.due()
        if actual is not None:
            settlement.reservation.settle(actual)

    def finish() -> None:
        try:
            settle()
        finally:
            if release is not None:
                release()

    def start_settling(
        status: str, headers: HeaderList, exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        settlement.said(_status_code(status), _fields(headers))
        if not at_end:
            settle()
        if exc_info is None:
            return start_response(status, headers)
        return start_response(status, headers, exc_info)

    return start_settling, finish


def _hold(in_flight: InFlightLimit, key: str) -> Optional[Callable[[], None]]:
    """Take one of ``key``'s in-flight slots; the call that releases it, or None if none is free.

    The release is done once, however often it is called.
    """
    slot = in_flight.acquire(key)
    if slot is None:
        return None
    held = slot

    def release() -> None:
        if held.held:
            in_flight.release(held)

    return release


class _Closing:
    """The app's response iterable, calling ``finish`` once it is closed, whatever happens.

    ``finish`` settles the request's cost, releases its in-flight slot, or both.
    """

    __slots__ = ("_finish", "_result")

    def __init__(self, result: Iterable[bytes], finish: Callable[[], None]) -> None:
        self._result = result
        self._finish = finish

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        """Close the app's iterable (PEP 3333), then call ``finish``."""
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()


def _status_code(status: str) -> int:
    """The code of a WSGI status line (``"200 OK"``); 0 if it has none."""
    code = status[:3]
    return int(code) if code.isdigit() else 0


def _fields(headers: HeaderList) -> Dict[str, str]:
    """Response header fields by lower-case name (repeated ones joined with ``", "``)."""
    fields: Dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        previous = fields.get(name)
        fields[name] = value if previous is None else f"{previous}, {value}"
    return fields


def _run(op: Union[AdminOp, RulesOp]) -> Union[List[Any], Exception]:
    """Make the registry calls of ``op``; their results, or the error that stopped them.

    A ``ConnectionError`` or a ValueError (see the ASGI middleware's ``_run``).
    """
    try:
        return [
            getattr(registry, name)(*args, **kwargs) for registry, name, args, kwargs in op.steps()
        ]
    except (ConnectionError, ValueError) as exc:
        return exc


def _answer_admin(admin: AdminRequest, stream: Any, terminated: bool) -> Response:
    """The answer to an authorised admin request: its body read, its calls made, audited.

    ``stream`` is the body's (``wsgi.input``, or a Django request); ``terminated`` says whether
    it ends where the body does (``wsgi.input_terminated``), so that it may be read without a
    declared length.
    """
    body = _read_body(stream, admin, terminated)
    op = admin.operation(body)
    if isinstance(op, Response):
        return op
    results = _run(op)
    return admin.answer(op, results)


def _read_body(stream: Any, admin: AdminRequest, terminated: bool) -> bytes:
    """Read the request body: its declared length, else up to the limit.

    Without a declared length, the body is read (to one byte past the limit) only when the
    stream is ``terminated``; else it is empty. Nothing is read when ``admin`` wants no body.
    """
    if not admin.limit:
        return b""
    if admin.length is not None:
        return bytes(stream.read(admin.length))  # shorter: cut short (see operation)
    return bytes(stream.read(admin.limit + 1)) if terminated else b""


def _path(environ: WSGIEnvironment) -> str:
    """``PATH_INFO``, the path within the app, decoded as UTF-8 like an ASGI path.

    An app mounted under a prefix (``SCRIPT_NAME``: gunicorn's, a dispatcher's) sees its own
    paths, as the ASGI middleware uses the path without ``root_path``.

    PEP 3333 servers pass the path's bytes as latin-1 code points; they are decoded as UTF-8
    (invalid sequences become U+FFFD). A path with a character past U+00FF cannot be such bytes:
    the server has decoded it already, and it is used as it is.
    """
    path = environ.get("PATH_INFO", "")
    if not path.isascii():
        try:
            raw = path.encode("latin-1")
        except UnicodeEncodeError:
            return str(path)
        path = raw.decode("utf-8", "replace")
    return str(path)


def _decode_headers(environ: WSGIEnvironment) -> Dict[str, str]:
    headers: Dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            headers[name[5:].replace("_", "-").lower()] = value
    for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        value = environ.get(name)
        if value:
            headers[name.replace("_", "-").lower()] = value
    return headers


def _view(environ: WSGIEnvironment, path: Optional[str] = None) -> RequestView:
    """The view of a request: its ``path`` is ``PATH_INFO`` (`_path`) unless given."""
    if path is None:
        path = _path(environ)
    return RequestView(
        environ.get("REQUEST_METHOD", "GET"),
        environ.get("wsgi.url_scheme", "http"),
        path,
        environ.get("QUERY_STRING", ""),
        environ.get("REMOTE_ADDR"),
        environ,
        _decode_headers,
    )


def _respond(start_response: StartResponse, response: Response) -> Iterable[bytes]:
    start_response(status_line(response.status), list(response.headers))
    return [response.body]
