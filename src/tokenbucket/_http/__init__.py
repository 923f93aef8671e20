"""The HTTP decisions both middlewares share, written once and free of I/O (sans-IO).

``asgi.py`` and ``wsgi.py`` are the edges (their I/O helpers in ``_asgi_io.py`` and
``_wsgi_io.py``): each turns its protocol into a `RequestView`, makes every registry call
(awaited under ASGI when the store is async, plain under WSGI) and every read and write, and
translates what this package decides. Nothing here touches a socket, an
ASGI or WSGI message, a web framework, or calls a registry method:

=========== ============================================= =====================================
module      knows                                         must not know
=========== ============================================= =====================================
request     `RequestView`; the default client key (IPv6   protocols, header writing, options
            networks) and its store key
headers     rate-limit fields, ``Retry-After``, the 429   requests, options, registries
            and JSON `Response`; joining the app's fields
denied      the ``denied`` option's answer checked and     protocols, options, registries
            given the fields; RFC 9457 problem details
guard       `Guard`: one limit of a framework integration  frameworks, request objects,
            (policy, key, cost, scope namespaces), its     responses
            registry call and its fields
paths       ``exempt``/``routes`` patterns and matching   requests, policies, headers
options     `Options` (every option, checked once),       protocols, bodies; it names the
            `Policy`; how a request is counted, and its   registry call to make, the edge
            verdict: the 429, or the fields to add        makes it
middleware  `Middleware`, the constructor both edges      option checks, protocols, requests,
            share; the fast path's values                 registry calls
admin       the admin API: token check and refusal, body  how the body is read; the registry
            size, dispatch to a parser; what is audited   calls (the edge makes them, then
                                                          sends ``AdminAPI.outcome``)
admin_parse query and JSON body to an `AdminOp` or a     the token, the body's reading,
            400 (fields, numbers, route, named limit)     registry calls, answers, audit
admin_op    `AdminOp`: a plan of registry calls, the 200  requests, the token, parsing; it
            JSON from their results; the 503              makes no registry call
audit       the admin audit log (``tokenbucket.admin``),  HTTP, registries, credentials
            refusals summarised, the ``on_admin`` hook
shadow      policies in shadow; the admin switch of a     the store: a switch is in-process
            policy or named limit (the one registry call  (``set_shadow`` does no I/O), made
            made here: ``set_shadow``), its audit record  in ``AdminAPI.outcome``
=========== ============================================= =====================================

The names tests and older imports use are re-exported here; new code imports from the module.
"""

from .admin import DEFAULT_ADMIN_PATH, DEFAULT_MAX_BODY, AdminAPI
from .admin_op import AdminOp
from .headers import (
    OWN_FIELDS,
    OWN_INITIALS,
    RAW,
    RAW_OWN_FIELDS,
    RAW_OWN_INITIALS,
    SF_INTEGER_MAX,
    TEXT,
    HeaderList,
    RawHeaderList,
    Response,
    add_fields,
    denial,
    json_response,
    rate_limit_headers,
    retry_after_seconds,
    status_line,
)
from .options import Options
from .paths import Paths
from .policy import Limit, Policy
from .request import (
    DEFAULT_IPV6_PREFIX,
    UNKNOWN_CLIENT,
    DecisionHook,
    KeyFunc,
    RequestView,
    check_ipv6_prefix,
    client_key,
    default_bucket,
    ipv6_key,
)

__all__ = [
    "DEFAULT_ADMIN_PATH",
    "DEFAULT_IPV6_PREFIX",
    "DEFAULT_MAX_BODY",
    "OWN_FIELDS",
    "OWN_INITIALS",
    "RAW",
    "RAW_OWN_FIELDS",
    "RAW_OWN_INITIALS",
    "SF_INTEGER_MAX",
    "TEXT",
    "UNKNOWN_CLIENT",
    "AdminAPI",
    "AdminOp",
    "DecisionHook",
    "HeaderList",
    "KeyFunc",
    "Limit",
    "Options",
    "Paths",
    "Policy",
    "RawHeaderList",
    "RequestView",
    "Response",
    "add_fields",
    "check_ipv6_prefix",
    "client_key",
    "default_bucket",
    "denial",
    "ipv6_key",
    "json_response",
    "rate_limit_headers",
    "retry_after_seconds",
    "status_line",
]
