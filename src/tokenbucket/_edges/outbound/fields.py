"""Sans-IO: what a server's rate-limit header fields say, read defensively, and the wait it means.

Knows: the fields servers send about their limits (draft-ietf-httpapi-ratelimit-headers'
``RateLimit`` and ``RateLimit-Policy``, the ``X-RateLimit-*`` family, ``Retry-After`` and
``retry-after-ms``), how to read them from a list of name/value pairs into a `ServerLimit`, and
the arithmetic of the waits they imply (`pause_for`, `retry_wait`). Must not know: HTTP clients,
registries, clocks other than the epoch ``now`` it is given.

Header values come from the network: every number is checked (finite, not negative) and
clamped to `MAX_SERVER_WAIT` for durations and `MAX_QUOTA` for counts, and anything malformed
is ignored field by field. Nothing here raises on any input.
"""

from __future__ import annotations

import math
from email.utils import parsedate_to_datetime
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

#: The longest wait a server's fields can ask for, in seconds (one day): larger values, dates
#: far in the future and absurd counts are clamped to it, so no field can cause an unbounded sleep.
MAX_SERVER_WAIT = 86_400.0
#: The largest quota or remaining count taken from a field (RFC 9651's largest Integer).
MAX_QUOTA = 999_999_999_999_999.0
#: ``X-RateLimit-Reset`` values at or above this are Unix timestamps, below it seconds (the two
#: conventions in use): 1e9 is September 2001, and no window lasts 31 years.
EPOCH_THRESHOLD = 1e9

Headers = Iterable[Tuple[str, str]]


class ServerLimit(NamedTuple):
    """What one response said about the server's limit; None for what it did not say.

    Attributes:
        limit: the quota ``q`` (requests per window), from ``RateLimit-Policy`` or
            ``X-RateLimit-Limit``.
        window: the window ``w`` in seconds (``RateLimit-Policy`` only).
        remaining: the requests left ``r``, from ``RateLimit`` or ``X-RateLimit-Remaining``.
        reset: seconds until the quota resets ``t``, from ``RateLimit`` or
            ``X-RateLimit-Reset`` (seconds, or a Unix timestamp made relative).
        retry_after: seconds to wait before retrying, from ``retry-after-ms`` (preferred, it is
            finer) or ``Retry-After`` (seconds or an HTTP date).
    """

    limit: Optional[float] = None
    window: Optional[float] = None
    remaining: Optional[float] = None
    reset: Optional[float] = None
    retry_after: Optional[float] = None

    @property
    def rate(self) -> Optional[float]:
        """The sustained rate the policy allows, ``q / w`` per second; None if not said."""
        if self.limit is None or not self.window:
            return None
        return self.limit / self.window


def _number(text: str, upper: float) -> Optional[float]:
    """A non-negative finite number clamped to ``upper``, or None if ``text`` is not one."""
    text = text.strip()
    if not text or len(text) > 64:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value) or value < 0:
        return None
    return min(value, upper)


def _split(text: str, separator: str) -> List[str]:
    """Split a Structured Field at ``separator`` outside of quoted strings."""
    parts: List[str] = []
    current: List[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def parse_items(text: str) -> Dict[str, Dict[str, str]]:
    """Read a ``RateLimit``/``RateLimit-Policy`` value: the parameters of each item, by name.

    A tolerant reading of an RFC 9651 List of Items with parameters
    (``"burst";q=10;w=10, "daily";q=1000;w=86400``); items whose name is not a String or a
    Token are skipped, parameters without a value are ignored. At most 16 items are read.
    """
    items: Dict[str, Dict[str, str]] = {}
    for member in _split(text[:4096], ",")[:16]:
        parts = _split(member, ";")
        name = parts[0].strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif not name or '"' in name or "=" in name:
            continue
        params = {}
        for part in parts[1:]:
            key, equals, value = part.partition("=")
            if equals:
                params[key.strip().lower()] = value.strip()
        items.setdefault(name, params)
    return items


def _http_date(text: str, now: float) -> Optional[float]:
    """Seconds from ``now`` (epoch) until an HTTP date, at least 0; None if not a date."""
    try:
        moment = parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if math.isnan(moment):
        return None
    return min(max(moment - now, 0.0), MAX_SERVER_WAIT)


def _retry_after(fields: Dict[str, str], now: float) -> Optional[float]:
    millis = fields.get("retry-after-ms")
    if millis is not None:
        value = _number(millis, MAX_SERVER_WAIT * 1000)
        if value is not None:
            return value / 1000
    text = fields.get("retry-after")
    if text is None:
        return None
    value = _number(text, MAX_SERVER_WAIT)
    return value if value is not None else _http_date(text, now)


def _reset(text: str, now: float) -> Optional[float]:
    value = _number(text, math.inf)
    if value is None:
        return None
    if value >= EPOCH_THRESHOLD:  # a Unix timestamp
        value = max(value - now, 0.0)
    return min(value, MAX_SERVER_WAIT)


def read_fields(headers: Headers, now: float) -> ServerLimit:
    """Read the server's rate-limit fields from ``headers`` (name/value pairs, any case).

    ``now`` is the current Unix time, to make dates and timestamps relative. The draft's fields
    win over the ``X-RateLimit-*`` ones. With several policies, ``RateLimit`` names the one its
    ``r`` and ``t`` are about; the quota and window reported are the smallest quota and the
    slowest rate (``q / w``) among those listed, so that following them never exceeds any.
    Never raises; what is missing or malformed is None.
    """
    fields: Dict[str, str] = {}
    for name, value in headers:
        key = name.lower() if isinstance(name, str) else str(name).lower()
        if key in _WANTED and key not in fields:
            fields[key] = value if isinstance(value, str) else str(value)
    limit = window = remaining = reset = None
    policy_text = fields.get("ratelimit-policy")
    if policy_text is not None:
        limit, window = _tightest(parse_items(policy_text))
    state_text = fields.get("ratelimit")
    if state_text is not None:
        for params in parse_items(state_text).values():
            if "r" in params:
                remaining = _number(params["r"], MAX_QUOTA)
            if "t" in params:
                reset = _number(params["t"], MAX_SERVER_WAIT)
            break  # the first item: the policy the state is about
    if limit is None and "x-ratelimit-limit" in fields:
        limit = _number(fields["x-ratelimit-limit"], MAX_QUOTA)
    if remaining is None and "x-ratelimit-remaining" in fields:
        remaining = _number(fields["x-ratelimit-remaining"], MAX_QUOTA)
    if reset is None and "x-ratelimit-reset" in fields:
        reset = _reset(fields["x-ratelimit-reset"], now)
    return ServerLimit(limit, window, remaining, reset, _retry_after(fields, now))


_WANTED = frozenset(
    {
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "retry-after",
        "retry-after-ms",
    }
)


def _tightest(items: Dict[str, Dict[str, str]]) -> Tuple[Optional[float], Optional[float]]:
    """The smallest quota and, with it, the window of the slowest rate among ``items``."""
    limit: Optional[float] = None
    window: Optional[float] = None
    rate = math.inf
    for params in items.values():
        quota = _number(params.get("q", ""), MAX_QUOTA)
        if quota is None:
            continue
        limit = quota if limit is None else min(limit, quota)
        seconds = _number(params.get("w", ""), MAX_SERVER_WAIT)
        if seconds and quota / seconds < rate:
            rate = quota / seconds
    if limit is not None and rate < math.inf:
        window = min(limit / rate, MAX_SERVER_WAIT) if rate > 0 else MAX_SERVER_WAIT
    return limit, window


def pause_for(server: ServerLimit) -> float:
    """Seconds from the server's decision until it admits one more request; 0 if it has room.

    Only a ``remaining`` below 1 asks for a pause. When the policy's rate is known and the
    fields are those of a token bucket (the level ``t`` seconds before full, ``q - rate * t``,
    is below one request), the wait is for the next request's worth to refill; otherwise (a
    fixed window, or no window said) it is the whole ``reset``. At most `MAX_SERVER_WAIT`.
    """
    if server.remaining is None or server.remaining >= 1 or server.reset is None:
        return 0.0
    rate = server.rate
    if rate is not None and rate > 0 and server.limit is not None:
        # t is rounded up to whole seconds by most servers: q - rate * t is the level's lower
        # bound, and it is below one request exactly when the fields describe a refilling bucket.
        floor = server.limit - rate * server.reset
        if floor < 1:
            return min((1 - max(floor, 0.0)) / rate, server.reset, MAX_SERVER_WAIT)
    return min(server.reset, MAX_SERVER_WAIT)


def retry_wait(status: int, server: ServerLimit) -> Optional[float]:
    """The wait before retrying a response with ``status``; None if it is not to be retried.

    A 429 or a 503 carrying ``Retry-After`` (or ``retry-after-ms``) is retried after it; a 429
    without it, after the ``reset`` its fields state when ``remaining`` is 0. Anything else is
    not retried. At most `MAX_SERVER_WAIT`.
    """
    if status not in (429, 503):
        return None
    if server.retry_after is not None:
        return server.retry_after
    if status == 429 and server.remaining is not None and server.remaining < 1:
        return server.reset
    return None
