"""`Middleware`: the constructor both middlewares share: the app, its options, admin API and gate.

What belongs here: taking the middleware arguments, refusing an app that is not callable and a
registry or in-flight store the protocol cannot use (through the edge's ``_check_registry`` and
``_check_in_flight``), building the `Options` once, the admin API and the `Gate` that plans
every request. It must not know the options' checks or meaning (`Options` holds them), a
protocol, a request, or make a registry call.
"""

from __future__ import annotations

from typing import (
    Any,
    Callable,
    ClassVar,
    Generic,
    Iterable,
    Literal,
    Mapping,
    Optional,
    TypeVar,
    Union,
)

from .._core.rule import Limits
from .._core.validate import show
from .._registry.inflight import InFlightLimit
from .._registry.registry import BucketRegistry
from ..metrics import Metrics
from .admin import admin_api
from .admin_options import DEFAULT_ADMIN_PATH, DEFAULT_MAX_BODY, DEFAULT_MAX_IMPORT_BODY
from .denied import Denied
from .headers import TEXT
from .options import Options
from .plan import Gate
from .request import DEFAULT_IPV6_PREFIX, DecisionHook, KeyFunc, RequestView
from .settle import SettleFunc

#: The app a middleware protects: an ASGI or a WSGI callable.
App = TypeVar("App", bound=Callable[..., Any])


class Middleware(Generic[App]):
    """What both middlewares are built from: the app, its `Options`, admin API and `Gate`.

    The constructor is theirs (the arguments are documented on each middleware); it checks
    every option here, once. A middleware names its kind of app in ``_app_kind`` and the form
    of its fields in ``_form``, and refuses a registry its protocol cannot use in
    ``_check_registry``.
    """

    __slots__ = ("_admin", "_gate", "_in_flight", "_options", "app")
    _app_kind: ClassVar[str] = "an app"
    #: The form of the rate-limit fields the edge adds: `TEXT` (str) or `RAW` (bytes).
    _form: ClassVar[Literal[0, 1]] = TEXT

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
        #: The admin API, if any (``admin_token``).
        self._admin = admin_api(options)
        #: Where every request gets its plan.
        self._gate = Gate(options, self._admin, self._form)

    def _check_registry(self, registry: BucketRegistry) -> None:
        """Raise ``TypeError`` for a registry this protocol cannot use (none, by default)."""

    def _check_in_flight(self, in_flight: InFlightLimit) -> None:
        """Raise ``TypeError`` for an in-flight limit this protocol cannot use (none by default)."""
