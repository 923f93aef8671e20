"""Async helpers that load ``asyncio`` and ``inspect`` only when an async path needs them.

``import tokenbucket`` stays cheap for sync users: ``asyncio`` (and ``ssl`` through it) and
``inspect`` are imported here, lazily, the first time an async call sleeps or awaits.
"""

from __future__ import annotations

import sys
from types import FunctionType, MethodType
from typing import Any

#: ``inspect.CO_COROUTINE``: the code flag of an ``async def`` function.
_CO_COROUTINE = 0x80


def iscoroutinefunction(obj: Any) -> bool:
    """`inspect.iscoroutinefunction`, answered without importing ``inspect`` when it can be.

    A plain function (or a method bound to one) is a coroutine function exactly when its code
    has the coroutine flag, unless ``inspect.markcoroutinefunction`` marked it, which needs
    ``inspect`` loaded: anything else, or once ``inspect`` is loaded, asks ``inspect`` itself.
    """
    if "inspect" not in sys.modules:
        func = obj.__func__ if type(obj) is MethodType else obj
        if (
            type(func) is FunctionType
            and not hasattr(func, "__partialmethod__")
            and not hasattr(func, "_partialmethod")
        ):
            return bool(func.__code__.co_flags & _CO_COROUTINE)
    import inspect

    return inspect.iscoroutinefunction(obj)


def isawaitable(obj: Any) -> bool:
    """`inspect.isawaitable` (imports ``inspect`` on first use)."""
    import inspect

    return inspect.isawaitable(obj)


def sleep(seconds: float) -> Any:
    """`asyncio.sleep` (imports ``asyncio`` on first use)."""
    import asyncio

    return asyncio.sleep(seconds)
