"""`Middleware`: the constructor both middlewares share, and the values their hot path reads.

What belongs here: taking the middleware arguments, refusing an app that is not callable and a
registry or in-flight store the protocol cannot use (through the edge's ``_check_registry`` and
``_check_in_flight``), building the `Options` once, and keeping the fast path's values one
attribute lookup away. It must not know the options' checks or meaning (`Options` holds them),
a protocol, a request, or make a registry call.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Generic, Iterable, Mapping, Optional, TypeVar, Union

from .._core.rule import Limits
from .._core.validate import show
from .._registry.inflight import InFlightLimit
from .._registry.registry import BucketRegistry
from ..metrics import Metrics
from .admin import DEFAULT_ADMIN_PATH, DEFAULT_MAX_BODY
from .denied import Denied
from .options import Options
from .request import DEFAULT_IPV6_PREFIX, DecisionHook, KeyFunc, RequestView
from .rules import DEFAULT_MAX_IMPORT_BODY, sub_paths
from .settle import SettleFunc

#: The app a middleware protects: an ASGI or a WSGI callable.
App = TypeVar("App", bound=Callable[..., Any])


class Middleware(Generic[App]):
    """What both middlewares are built from: the app, its `Options` and the fast path's values.

    The constructor is theirs (the arguments are documented on each middleware); it checks
    every option here, once. A middleware names its kind of app in ``_app_kind`` and refuses a
    registry its protocol cannot use in ``_check_registry``.
    """

    __slots__ = (
        "_admin",
        "_admin_path",
        "_admin_paths",
        "_consume",
        "_cost",
        "_in_flight",
        "_ipv6_prefix",
        "_options",
        "app",
    )
    _app_kind: ClassVar[str] = "an app"

    def __init__(
        self,
        app: App,
        *,
        registry: BucketRegistry,
        key: Optional[KeyFunc] = None,
        cost: Union[float, Callable[[RequestView], float]] = 1,
        exempt: Union[Iterable[str], Callable[[RequestView], bool], None] = None,
        routes: Optional[Mapping[str, Limits]] = None,
        dry_run: bool = False,
        headers: Optional[str] = "draft",
        on_decision: Optional[DecisionHook] = None,
        admin_token: Optional[str] = None,
        admin_path: str = DEFAULT_ADMIN_PATH,
        max_body: int = DEFAULT_MAX_BODY,
        max_import_body: int = DEFAULT_MAX_IMPORT_BODY,
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
        in_flight: Optional[InFlightLimit] = None,
        metrics: Optional[Metrics] = None,
        settle: Optional[SettleFunc] = None,
        settle_at: str = "start",
        shadow_policies: Iterable[str] = (),
        denied: Optional[Denied] = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"'app' must be {self._app_kind} (a callable), got {show(app)}")
        self._check_registry(registry)
        if isinstance(in_flight, InFlightLimit):
            self._check_in_flight(in_flight)
        #: The app this middleware protects.
        self.app = app
        options = self._options = Options(
            registry=registry,
            key=key,
            cost=cost,
            exempt=exempt,
            routes=routes,
            dry_run=dry_run,
            headers=headers,
            on_decision=on_decision,
            admin_token=admin_token,
            admin_path=admin_path,
            max_body=max_body,
            max_import_body=max_import_body,
            ipv6_prefix=ipv6_prefix,
            in_flight=in_flight,
            metrics=metrics,
            settle=settle,
            settle_at=settle_at,
            shadow_policies=shadow_policies,
            denied=denied,
        )
        #: The in-flight limit, if any: a request holds one of its key's slots until it ends.
        self._in_flight = in_flight
        self._admin = options.admin
        self._admin_path = None if options.admin is None else options.admin.path
        #: The endpoints under the admin path (``_http.rules``); none without an admin API.
        self._admin_paths = frozenset() if options.admin is None else sub_paths(options.admin.path)
        # Read on every request: kept here, one attribute lookup away. None when requests need
        # more than the default key, cost and registry (see `Options.is_plain`).
        self._consume = options.default.registry.consume if options.is_plain else None
        self._cost = options.cost
        self._ipv6_prefix = options.ipv6_prefix

    def _check_registry(self, registry: BucketRegistry) -> None:
        """Raise ``TypeError`` for a registry this protocol cannot use (none, by default)."""

    def _check_in_flight(self, in_flight: InFlightLimit) -> None:
        """Raise ``TypeError`` for an in-flight limit this protocol cannot use (none by default)."""
