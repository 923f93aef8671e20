r"""One state per key for all of its limits: the in-memory layout of a key's named limits.

A registry of several limits charges limit ``name`` of key ``key``: the bucket whose store key
is ``limit_key(key, name)`` (``"{" + tag(key) + "}\0" + name``, see ``_core.keys``).
`MemoryStore` keeps all the limits of one key in one *group state*, under the key itself in the
stripe's dict of groups (apart from the dict of single buckets, so a key's single bucket and its
limits never meet): one lookup, one lock and one entry per key, however many limits it has.

A group state is a flat tuple: its *layout*, ``((name, shape), ...)``, the limits' names and
the shapes of the rules their states were written under, then ``(base, used)`` of each limit.
A limit's state is a single bucket's (see ``store``), ``(base, used, carry)``, with ``carry``
left out while it is the int ``EXACT`` (an exact sum of integer sizes, the common case): then
``used`` stands alone, else it is the pair ``(used, carry)``. So a key of two limits costs two
slots more than a single bucket's 4-tuple. A layout holds only strings and numbers, so the
cyclic garbage collector untracks the state as it does a single one. Layouts are interned
(`layout_of`): a state written under a registry's defaults carries the very layout object the
registry holds, so the hot path recognises it with one ``is``. A state with a fraction (a
``(used, carry)`` pair) carries a twin of its layout instead, equal to it but another object
(`_fractional`): so that one ``is`` also tells the hot path that every ``used`` is an int.

What belongs here: the layout, packing and unpacking a group state (a limit's store key is read
back by ``_core.keys.split_limit_key``). What it must not know: locks, the cap, decisions (and
when a group is full: the sweep's ``group_fullness``).
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Sequence, Tuple

from ..._core.arith import EXACT
from ..._core.rule import Rule
from .sweep import Shape, State

#: A group state's layout: the name and rule shape of each limit, in the state's order.
Layout = Tuple[Tuple[str, Shape], ...]
#: A key's limits in a MemoryStore: the `Layout`, then ``(base, used)`` per limit (``used`` the
#: pair ``(used, carry)`` unless ``carry`` is ``EXACT``).
GroupState = Tuple[Any, ...]
#: What the hot path reads of each limit of a layout, computed once per rule set (`steps_of`):
#: ``(index, index + 1, refill_rate, ceiling)``, where its ``base`` and ``used`` are in a state.
Steps = Tuple[Tuple[int, int, float, float], ...]

#: Interned layouts (see `layout_of`); bounded, since override shapes make more (a layout not
#: interned is only slower: the hot path misses and the general path compares by value).
_LAYOUTS: Dict[Layout, Layout] = {}
_MAX_LAYOUTS = 4096
#: The twins of layouts for states with a fraction (see `_fractional`), bounded as `_LAYOUTS`,
#: and the layout each twins, by the twin's id (kept here, a twin lives on: its id is its own).
#: A twin not kept (past the bound) stays on its state: the hot path then misses that key.
_FRACTIONAL: Dict[Layout, Layout] = {}
_TWINNED: Dict[int, Layout] = {}
#: Held while a twin is made and kept, so that a layout has one kept twin and every id in
#: `_TWINNED` is a kept twin's (a twin another thread made at the same time is not kept).
_TWINNING = threading.Lock()


def layout_of(limits: Sequence[Tuple[str, Rule]]) -> Layout:
    """The interned layout of ``limits`` (``(name, rule)`` pairs) under their own rules."""
    layout = tuple((name, rule._shape) for name, rule in limits)
    found = _LAYOUTS.get(layout)
    if found is not None:
        return found
    if len(_LAYOUTS) < _MAX_LAYOUTS:
        return _LAYOUTS.setdefault(layout, layout)
    return layout


def steps_of(layout: Layout) -> Steps:
    """What the hot path reads of each limit of ``layout`` (see `Steps`)."""
    return tuple(
        (2 * index + 1, 2 * index + 2, shape[1], shape[2])
        for index, (_, shape) in enumerate(layout)
    )


def unpack(state: Optional[GroupState]) -> Dict[str, State]:
    """A group state as ``{name: (base, used, carry, shape)}`` (empty for None)."""
    if state is None:
        return {}
    limits = {}
    for index, (name, shape) in enumerate(state[0]):
        base, used = state[2 * index + 1], state[2 * index + 2]
        if used.__class__ is tuple:
            limits[name] = (base, used[0], used[1], shape)
        else:
            limits[name] = (base, used, EXACT, shape)
    return limits


def pack(
    limits: Dict[str, State], first: Sequence[str], previous: Optional[Layout] = None
) -> GroupState:
    """The group state of ``limits`` (``{name: state}``), the names ``first`` first.

    Putting a call's names first (in its order) lets the state match the registry's layout,
    whatever limits the key had before. The ``previous`` layout is kept if it still fits.
    """
    if previous is not None and len(previous) == len(limits) == len(first):
        for (name, shape), wanted in zip(previous, first):
            state = limits.get(name)
            if name != wanted or state is None or state[3] is not shape:
                break
        else:  # the same limits in the call's order, under the same rules: as it was
            return _packed(previous, limits, first)
    names = [name for name in first if name in limits]
    names += [name for name in limits if name not in names]
    layout = tuple((name, limits[name][3]) for name in names)
    return _packed(_LAYOUTS.get(layout, layout), limits, names)


def _packed(layout: Layout, limits: Dict[str, State], names: Sequence[str]) -> GroupState:
    """The group state of ``limits`` in the order of ``names``, under ``layout``.

    Under the interned layout if every ``used`` is an int, else under its `_fractional` twin.
    """
    flat: list = [layout]  # type: ignore[type-arg]
    exact = True
    for name in names:
        base, used, carry, _ = limits[name]
        if carry is EXACT:
            flat += (base, used)
        else:
            flat += (base, (used, carry))
            exact = False
    flat[0] = _TWINNED.get(id(layout), layout) if exact else _fractional(layout)
    return tuple(flat)


def _fractional(layout: Layout) -> Layout:
    """The twin of ``layout`` for a state with a fraction: equal to it, never the same object.

    So a state under an interned layout has every ``used`` an int, and the hot path, which
    recognises the registry's layout with one ``is``, needs no test of each limit's ``used``.
    """
    found = _FRACTIONAL.get(layout)
    if found is not None:
        return found
    twin = (*layout,)  # a new tuple (tuple() would answer layout itself)
    with _TWINNING:
        found = _FRACTIONAL.get(layout)  # (made by another thread meanwhile)
        if found is not None:
            return found
        if len(_FRACTIONAL) < _MAX_LAYOUTS:
            # Known as a twin before it is handed out; kept (so its id stays its own) for good.
            _TWINNED[id(twin)] = _LAYOUTS.get(layout, layout)
            _FRACTIONAL[twin] = twin
    return twin
