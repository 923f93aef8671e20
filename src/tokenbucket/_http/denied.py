"""The denial the user shapes: the ``denied`` option, and the built-in RFC 9457 problem details.

Knows: what a ``denied(request, decision) -> Response`` callable may return, how its response
keeps ``Retry-After`` and the rate-limit fields (added unless it set them itself), and the
``application/problem+json`` body of draft-ietf-httpapi-ratelimit-headers' "quota-exceeded"
problem type (`problem_details`). Must not know: protocols, options, registries.
"""

from __future__ import annotations

import json
from typing import Callable, List, Optional, Tuple

from .._core.decision import Decision
from .._core.validate import show
from .headers import OWN_FIELDS, OWN_INITIALS, HeaderList, Response, add_fields, retry_after_seconds
from .request import RequestView

#: The ``denied`` option: the request view and the denying decision in, the 429 out. The
#: decision's ``policy`` is the name the rate-limit fields give the policy (``"default"``, a
#: route's pattern, or with several limits the binding one).
Denied = Callable[[RequestView, Decision], Response]

#: The problem type the rate-limit draft registers for a request over its quota.
QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"


def problem_details(request: RequestView, decision: Decision) -> Response:
    """A 429 as RFC 9457 problem details (``application/problem+json``), as the draft describes.

    Pass it as ``denied=problem_details`` to either middleware. The body is:

        {"type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
         "title": "Request cannot be satisfied as assigned quota has been exceeded",
         "status": 429, "detail": "Retry after 12 seconds.",
         "violated-policies": ["default"]}

    ``violated-policies`` names the policy as the ``RateLimit`` field does (the binding limit,
    with several). The middleware adds ``Retry-After`` and the rate-limit fields.
    """
    wait = retry_after_seconds(decision)
    detail = (
        "This request can never be allowed."
        if wait is None
        else f"Retry after {wait} second{'' if wait == 1 else 's'}."
    )
    body = json.dumps(
        {
            "type": QUOTA_EXCEEDED,
            "title": "Request cannot be satisfied as assigned quota has been exceeded",
            "status": 429,
            "detail": detail,
            "violated-policies": [decision.policy],
        }
    ).encode()
    headers = [("Content-Type", "application/problem+json"), ("Content-Length", str(len(body)))]
    return Response(429, headers, body)


def shaped_denial(
    denied: Denied, view: RequestView, decision: Decision, fields: HeaderList
) -> Response:
    """The user's denial for ``view``, with ``Retry-After`` and the ``fields`` it did not set.

    Raises TypeError, naming the callable, if it returns anything but a ``Response`` (or a
    ``(status, headers, body)`` tuple of an int, a list of str pairs and bytes).
    """
    answer = denied(view, decision)
    status, headers, body = _check(denied, answer)
    extra: List[Tuple[str, str]] = []
    wait = retry_after_seconds(decision)
    if wait is not None and not any(name.lower() == "retry-after" for name, _ in headers):
        extra.append(("Retry-After", str(wait)))
    extra.extend(fields)
    return Response(status, add_fields(headers, extra, _FIELDS, _INITIALS), body)


_FIELDS = OWN_FIELDS | {"retry-after"}
_INITIALS = OWN_INITIALS | {"r", "R"}


def _check(denied: Denied, answer: object) -> Tuple[int, HeaderList, bytes]:
    problem: Optional[str] = None
    if not isinstance(answer, tuple) or len(answer) != 3:
        problem = "a Response (status, headers, body)"
    else:
        status, headers, body = answer
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            problem = "a status from 100 to 599"
        elif not isinstance(headers, list) or not all(
            isinstance(field, tuple)
            and len(field) == 2
            and isinstance(field[0], str)
            and isinstance(field[1], str)
            for field in headers
        ):
            problem = "headers as a list of (str, str) pairs"
        elif not isinstance(body, bytes):
            problem = "a bytes body"
    if problem is not None:
        name = getattr(denied, "__qualname__", None) or repr(denied)
        raise TypeError(f"'denied' ({name}) must return {problem}, got {show(answer)}")
    return answer  # type: ignore[return-value]
