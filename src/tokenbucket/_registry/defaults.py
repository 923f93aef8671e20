"""The registry's rule methods beyond one key's: the defaults (shared or not) and listing.

A mixin of [`BucketRegistry`][tokenbucket.BucketRegistry], kept apart so that the registry module
stays small: changing the default rules (`update_default`), following default rules shared through
the store (`share_rules`, see ``_registry.shared``) and listing the overrides page by page
(`list_rules`, see ``_registry.listing``).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from .._core import aio as _aio
from .._core.rule import Rule
from .._core.validate import check_rule_fields
from .export import default_data, override_data, parse
from .limits import limit_key, pick
from .listing import MAX_COUNT, Page, check_page, registry_entries, store_prefix
from .shared import Sharing, check_interval, encode, store_methods

if TYPE_CHECKING:
    from .._stores.store import AsyncStore, Store


class RegistryRules:
    """The default rules and the listing of overrides (see the module docstring)."""

    __slots__ = ("_sharing",)

    _sharing: Optional[Sharing]
    _default: Rule
    _name: str
    _lock: threading.Lock
    _store: Union[Store, AsyncStore]
    _sync: Store
    _async: AsyncStore

    if TYPE_CHECKING:

        @property
        def limits(self) -> Tuple[str, ...]: ...

        @property
        def defaults(self) -> Dict[str, Rule]: ...

    def update_default(
        self,
        *,
        capacity: Optional[float] = None,
        refill_rate: Optional[float] = None,
        limit: Optional[str] = None,
    ) -> Rule:
        """Change the default rule's given fields; return the new default.

        Buckets under the default are settled at the rule they were last written with the first
        time they are read after the change. With `share_rules`, the change is written to the
        store, for every registry that shares the rules (a sync store: else use
        `aupdate_default`).
        """
        capacity, refill_rate = check_rule_fields(capacity, refill_rate)
        name = pick(self.limits, limit)
        sharing = self._sharing
        with self._lock:
            if sharing is not None:
                get, put = store_methods(self._sync)
                self._adopt(get(sharing.name))
            limits = self._changed(name, capacity, refill_rate)
            if sharing is not None:
                put(sharing.name, encode(limits))
            self._apply(limits)
            return limits[name]

    async def aupdate_default(
        self,
        *,
        capacity: Optional[float] = None,
        refill_rate: Optional[float] = None,
        limit: Optional[str] = None,
    ) -> Rule:
        """Awaitable `update_default` (for shared rules in an async store)."""
        capacity, refill_rate = check_rule_fields(capacity, refill_rate)
        name = pick(self.limits, limit)
        sharing = self._sharing
        if sharing is None:
            return self.update_default(capacity=capacity, refill_rate=refill_rate, limit=name)
        get, put = store_methods(self._async)
        self._adopt(await get(sharing.name))
        limits = self._changed(name, capacity, refill_rate)
        await put(sharing.name, encode(limits))
        self._apply(limits)
        return limits[name]

    def export_rules(self, *, namespace: str = "") -> Dict[str, Any]:
        """Return every rule, the defaults and each override, as a JSON-ready document.

        See [Persistence](../redis.md#persistence) for the format; `import_rules` restores it.
        ``namespace``: a middleware route's (see `list_rules`).
        """
        overrides: Dict[Tuple[str, str], Rule] = {}
        cursor: Optional[str] = None
        while True:
            cursor, page = self.list_rules(cursor, MAX_COUNT, namespace=namespace)
            overrides.update(((key, limit), rule) for key, limit, rule in page)
            if cursor is None:
                return _document(self.defaults, overrides)

    async def aexport_rules(self, *, namespace: str = "") -> Dict[str, Any]:
        """Awaitable `export_rules`."""
        overrides: Dict[Tuple[str, str], Rule] = {}
        cursor: Optional[str] = None
        while True:
            cursor, page = await self.alist_rules(cursor, MAX_COUNT, namespace=namespace)
            overrides.update(((key, limit), rule) for key, limit, rule in page)
            if cursor is None:
                return _document(self.defaults, overrides)

    def import_rules(self, document: Mapping[str, Any], *, namespace: str = "") -> int:
        """Validate a document of `export_rules` completely, then apply it; return the overrides.

        A bad entry anywhere raises ValueError (TypeError for a wrong type) naming it, and
        nothing changes. Then the defaults are set (written to the shared rules with
        `share_rules`) and every override listed is set, its bucket settled first as by
        `update_rule`; overrides the document does not list stay as they are.
        """
        defaults, overrides = parse(document, self.limits)
        sharing = self._sharing
        if sharing is not None:
            store_methods(self._sync)[1](sharing.name, encode(defaults))
        self._apply(defaults)
        entries = self._entries(defaults, overrides, namespace)
        batch = getattr(self._sync, "update_rules", None)
        if batch is not None:  # a store that sends many at once (Redis: pipelines)
            batch(entries)
            return len(overrides)
        update = self._sync.update_rule
        for key, default, rule in entries:
            update(key, default, rule.capacity, rule.refill_rate)
        return len(overrides)

    async def aimport_rules(self, document: Mapping[str, Any], *, namespace: str = "") -> int:
        """Awaitable `import_rules`."""
        defaults, overrides = parse(document, self.limits)
        sharing = self._sharing
        if sharing is not None:
            await store_methods(self._async)[1](sharing.name, encode(defaults))
        self._apply(defaults)
        entries = self._entries(defaults, overrides, namespace)
        batch = getattr(self._store, "update_rules", None)
        if batch is not None and _aio.iscoroutinefunction(batch):
            await batch(entries)
            return len(overrides)
        update = self._async.update_rule
        for key, default, rule in entries:
            await update(key, default, rule.capacity, rule.refill_rate)
        return len(overrides)

    def _entries(
        self, defaults: Dict[str, Rule], overrides: List[Tuple[str, str, Rule]], namespace: str
    ) -> List[Tuple[str, Rule, Rule]]:
        """``(store key, default, override)`` of each override of a parsed document."""
        if len(defaults) == 1:
            default = next(iter(defaults.values()))
            return [(namespace + key, default, rule) for key, _, rule in overrides]
        return [
            (limit_key(namespace + key, limit), defaults[limit], rule)
            for key, limit, rule in overrides
        ]

    def share_rules(
        self,
        name: str = "default",
        *,
        interval: float = 1.0,
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        """Follow the default rules named ``name`` in the store, shared by every process.

        Every ``interval`` seconds (1 by default, on ``clock``: ``time.monotonic`` unless a
        test injects one) one decision first reads them (one GET in Redis) and adopts them if
        they changed; `update_default` writes them. A change applies in every process within
        ``interval`` plus one round trip. Until a first change is written, each registry keeps
        the defaults it was built with. A middleware's routes share theirs too, named
        ``name + route``. See [Runtime updates](../runtime-updates.md#shared-default-rules).
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"'name' must be a non-empty str, got {name!r}")
        interval = check_interval(interval)
        if clock is not None and not callable(clock):
            raise TypeError(f"'clock' must be a zero-argument callable, got {clock!r}")
        store_methods(self._store)
        self._sharing = Sharing(name, interval, time.monotonic if clock is None else clock)

    def shared_like(self, other: RegistryRules, suffix: str) -> None:
        """Share rules as ``other`` does (if it does), under its name followed by ``suffix``."""
        sharing = other._sharing
        if sharing is not None:
            self.share_rules(sharing.name + suffix, interval=sharing.interval, clock=sharing.clock)

    @property
    def sharing(self) -> Optional[str]:
        """The name of the shared rules this registry follows (`share_rules`), or None."""
        return None if self._sharing is None else self._sharing.name

    def _refresh(self) -> None:
        """Read the shared rules if their deadline has passed (see `share_rules`).

        Not while the store says it is unavailable (a Redis store's circuit breaker is open):
        the decisions probe it, and a read would only wait for its timeout.
        """
        sharing = self._sharing
        if sharing is None or not sharing.due() or not getattr(self._store, "available", True):
            return
        try:
            text = store_methods(self._sync)[0](sharing.name)
        except (ConnectionError, OSError) as failure:
            sharing.failed(failure)
            return
        self._adopt(text)

    async def _arefresh(self) -> None:
        """Awaitable `_refresh`."""
        sharing = self._sharing
        if sharing is None or not sharing.due() or not getattr(self._store, "available", True):
            return
        try:
            text = await store_methods(self._async)[0](sharing.name)
        except (ConnectionError, OSError) as failure:
            sharing.failed(failure)
            return
        self._adopt(text)

    def _adopt(self, text: Optional[str]) -> None:
        """Apply a read of the shared rules, if they changed and are valid."""
        if self._sharing is not None:
            limits = self._sharing.adopt(text, self.limits)
            if limits is not None:
                self._apply(limits)

    def _changed(
        self, name: str, capacity: Optional[float], refill_rate: Optional[float]
    ) -> Dict[str, Rule]:
        """The limits with ``name``'s default changed as given."""
        limits = self.defaults
        limits[name] = limits[name].replace(capacity=capacity, refill_rate=refill_rate)
        return limits

    def _apply(self, limits: Dict[str, Rule]) -> None:
        """Make ``limits`` (every limit's default, by name) the defaults."""
        self._default = limits[self._name]  # type: ignore[misc]  # a slot of the registry

    def list_rules(
        self, cursor: Optional[str] = None, count: int = 100, *, namespace: str = ""
    ) -> Page:
        r"""Return a page of the overrides: ``(next cursor, [(key, limit, rule), ...])``.

        Start with ``cursor=None``; pass each returned cursor back for the next page, until it
        is None. ``count`` (1 to 1000) bounds the keys a page looks at, so a page may hold
        fewer entries, even none, before the end. Overrides present throughout are each listed
        (in Redis, SCAN may list one twice). ``namespace`` selects a middleware route's keys
        (``route + "\0"``). Not on a Redis Cluster (ValueError). See
        [Runtime updates](../runtime-updates.md#listing-overrides).
        """
        cursor, count = check_page(cursor, count)
        prefix = store_prefix(namespace, len(self.limits) > 1)
        store_page = _lister(self._sync)(prefix, cursor, count)
        return store_page[0], registry_entries(store_page[1], namespace, self.limits)

    async def alist_rules(
        self, cursor: Optional[str] = None, count: int = 100, *, namespace: str = ""
    ) -> Page:
        """Awaitable `list_rules`."""
        cursor, count = check_page(cursor, count)
        lister = _lister(self._store)
        store_page = lister(store_prefix(namespace, len(self.limits) > 1), cursor, count)
        if _aio.isawaitable(store_page):
            store_page = await store_page
        return store_page[0], registry_entries(store_page[1], namespace, self.limits)


def _document(defaults: Dict[str, Rule], overrides: Dict[Tuple[str, str], Rule]) -> Dict[str, Any]:
    """An export document (see ``_registry.export``)."""
    return {
        "version": 1,
        "default": default_data(defaults),
        "overrides": [override_data(key, limit, rule) for (key, limit), rule in overrides.items()],
    }


def _lister(store: object) -> Any:
    """The store's ``list_rules``, or TypeError for a store without one."""
    lister = getattr(store, "list_rules", None)
    if lister is None:
        raise TypeError(f"{store!r} cannot list its overrides (it has no 'list_rules')")
    return lister
