"""Wrappers that present a store to the registry in the form it calls.

``_Allowed`` gives any store the in-memory store's private ``_try_take`` answer;
``_Awaitable`` presents a synchronous store as an async one (its calls never block);
``_RequiresAwait`` stands in for the synchronous side of an async store and explains.
"""

from __future__ import annotations

from typing import Any, Literal, NoReturn, Optional, Tuple, Union, overload

from .._core.rule import Rule
from .._stores.store import Groups, Mask, Outcome, Outcomes, Store
from .shared import store_methods


class _Allowed:
    """``_try_take`` for any store: the protocol's ``take``, answering whether, or its outcome."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    @overload
    def _try_take(
        self, key: str, amount: int, default: Rule, want: Literal[False] = ..., /
    ) -> bool: ...

    @overload
    def _try_take(
        self, key: str, amount: int, default: Rule, want: Literal[True], /
    ) -> Outcome: ...

    def _try_take(
        self, key: str, amount: int, default: Rule, want: bool = False, /
    ) -> Union[bool, Outcome]:
        outcome = self._store.take(key, amount, default)
        return outcome if want else outcome[0]


class _Awaitable:
    """Presents a synchronous store as an async one (its methods never block)."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    async def take(self, key: str, amount: float, default: Rule, /) -> Outcome:
        return self._store.take(key, amount, default)

    async def peek(self, key: str, amount: float, default: Rule, /) -> Outcome:
        return self._store.peek(key, amount, default)

    async def level(self, key: str, default: Rule, /) -> float:
        return self._store.level(key, default)

    async def take_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        if shadow:
            return self._store.take_all(groups, amount, shadow)
        return self._store.take_all(groups, amount)

    async def peek_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        if shadow:
            return self._store.peek_all(groups, amount, shadow)
        return self._store.peek_all(groups, amount)

    async def charge(
        self, key: str, amount: float, default: Rule, max_wait: Optional[float], /
    ) -> Outcome:
        return self._store.charge(key, amount, default, max_wait)

    async def refund(self, key: str, amount: float, default: Rule, /) -> Outcome:
        return self._store.refund(key, amount, default)

    async def charge_all(
        self, groups: Groups, amount: float, max_wait: Optional[float], shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        if shadow:
            return self._store.charge_all(groups, amount, max_wait, shadow)
        return self._store.charge_all(groups, amount, max_wait)

    async def refund_all(self, groups: Groups, amount: float, /) -> Tuple[bool, Outcomes]:
        return self._store.refund_all(groups, amount)

    async def get_rule(self, key: str, /) -> Optional[Rule]:
        return self._store.get_rule(key)

    async def update_rule(
        self,
        key: str,
        default: Rule,
        capacity: Optional[float],
        refill_rate: Optional[float],
        /,
    ) -> Rule:
        return self._store.update_rule(key, default, capacity, refill_rate)

    async def remove_rule(self, key: str, default: Rule, /) -> Optional[Rule]:
        return self._store.remove_rule(key, default)

    async def reset(self, key: str, /) -> None:
        self._store.reset(key)

    async def get_shared(self, name: str, /) -> Optional[str]:
        return store_methods(self._store)[0](name)  # type: ignore[no-any-return]

    async def set_shared(self, name: str, text: str, /) -> None:
        store_methods(self._store)[1](name, text)


class _RequiresAwait:
    """Stands in for the synchronous store when the store is async: every call explains."""

    __slots__ = ("_store",)

    def __init__(self, store: object) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        def refuse(*args: object) -> NoReturn:
            raise TypeError(
                f"{self._store!r} is an async store: use the awaitable registry methods "
                f"(for example 'await registry.aconsume(key)')"
            )

        return refuse
