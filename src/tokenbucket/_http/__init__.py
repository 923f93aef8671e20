"""The HTTP decisions both middlewares share, written once and free of I/O (sans-IO).

``asgi.py`` and ``wsgi.py`` are the edges (their I/O helpers in ``_edges/asgi_io.py`` and
``_edges/wsgi_io.py``): each turns its request into a `RequestView`, asks its `Gate` for the
request's `Plan` and carries the plan out, making every registry call (awaited under ASGI when
the store is async, plain under WSGI) and every read and write. Nothing here touches a socket,
an ASGI or WSGI message or a web framework, calls back into an edge, or (but for ``guard``,
the framework integrations' limit) calls a registry method. The modules are listed from the
top down: each imports only modules below it.

============= =========================================== =====================================
module        knows                                       must not know
============= =========================================== =====================================
middleware    `Middleware`, the constructor both edges    option checks, protocols, requests,
              share: the options, admin API and gate      registry calls
plan          `Gate`: a request view in, its `Plan` out   protocols, bodies; it names the
              (the admin API's, or its in-flight slot     registry call to make, the edge
              and count); `Plan.decided`: the response    makes it
              to send (429 unless dry-run or shadow),
              or the fields and settlement
admin         the admin API (`admin_api`): token check    how the body is read; the registry
              and refusal, body size, dispatch to a       calls (the edge makes them, then
              parser; what is audited                     sends ``AdminAPI.outcome``)
rules,        the endpoints for every rule at once: their the token, how the body is read
rules_import  plans of registry calls, answers, audit
guard         `Guard`: one limit of a framework            frameworks, request objects,
              integration (policy, key, cost, scope       responses
              namespaces), its registry call and fields
admin_parse   query and JSON body to an `AdminOp` or a    the token, the body's reading,
              400 (fields, numbers, route, named limit)   registry calls, answers, audit
options       `Options` (every option, checked once);     protocols, the admin API, bodies,
              how a request is counted (`limit_for`),     registry calls
              the 429 of a denial (`denial`)
shadow        policies in shadow; the admin switch of a   the options, the store: a switch is
              policy or named limit (the one registry     in-process (``set_shadow`` does no
              call made here: ``set_shadow``), its audit  I/O), made in ``AdminAPI.outcome``
              record
admin_op      `AdminOp`: a plan of registry calls, the    requests, the token, parsing; it
              200 JSON from their results; the 503        makes no registry call
policy        `Policy`: a limiter (registry, namespace,   options, requests, protocols
              header name, shadow) and what it advertises
denied        the ``denied`` option's answer checked and  protocols, options, registries
              given the fields; RFC 9457 problem details
settle        `Settlement`: the ``settle`` option, what   protocols, options
              the response says a request cost
unservable    the 503 of a request whose keys span Redis  requests, options, protocols
              Cluster hash slots
request       `RequestView`; the default client key       protocols, header writing, options
              (IPv6 networks) and its store key
headers       rate-limit fields, ``Retry-After``, the     requests, options, registries
              429 and JSON `Response`; the app's fields
paths         ``exempt``/``routes`` patterns, matching    requests, policies, headers
admin_options the admin API's options checked, defaults   requests, policies, the admin API
audit         the admin audit log (``tokenbucket.admin``) HTTP, registries, credentials
============= =========================================== =====================================

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
