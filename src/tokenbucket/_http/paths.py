"""Path patterns: which requests ``exempt`` and ``routes`` select.

Knows: exact paths and ``/prefix/*`` patterns, compared as decoded and case-sensitively with
trailing slashes ignored, and the checks of a pattern. Must not know: requests (only their
path), policies or registries (a pattern's value is anything), header fields.
"""

from __future__ import annotations

from typing import Dict, Generic, Iterable, Optional, Tuple, TypeVar

from .._core.validate import show

_V = TypeVar("_V")


class Paths(Generic[_V]):
    """Path patterns, each with a value: exact paths, and prefixes written with a trailing ``*``.

    ``exempt`` and ``routes`` both match through this class, so they agree on what a path is.
    Paths are compared as decoded, case-sensitively, and trailing slashes never matter:
    ``/login``, ``/login/`` and ``/login//`` are one path (most frameworks serve them as one,
    or redirect one to the other), and a prefix ``/static/*`` covers ``/static`` as well as
    everything under ``/static/``. Both paths and patterns are compared with exactly one
    trailing slash. An exact pattern wins over a prefix, and a longer prefix over a shorter.
    """

    __slots__ = ("_exact", "_prefix_tuple", "_prefixes")

    def __init__(self, option: str, patterns: Iterable[Tuple[str, _V]]) -> None:
        exact: Dict[str, Tuple[str, _V]] = {}
        prefixes: Dict[str, Tuple[str, _V]] = {}
        for pattern, value in patterns:
            if pattern.endswith("*"):
                prefix = pattern[:-1]
                form, table = (slashed(prefix) if prefix.endswith("/") else prefix), prefixes
            else:
                form, table = slashed(pattern), exact
            other = table.get(form)
            if other is not None and other[1] != value:
                raise ValueError(
                    f"{option!r} paths {show(other[0])} and {show(pattern)} are the same route: "
                    "trailing slashes do not make another one"
                )
            table[form] = (pattern, value)
        self._exact = {form: value for form, (_, value) in exact.items()}
        # Longest first, so that the most specific prefix matches first.
        self._prefixes = tuple(
            sorted(
                ((form, value) for form, (_, value) in prefixes.items()),
                key=lambda item: len(item[0]),
                reverse=True,
            )
        )
        self._prefix_tuple = tuple(form for form, _ in self._prefixes)

    def get(self, path: str) -> Optional[_V]:
        """Return the value of the pattern ``path`` matches, or None if it matches none."""
        form = path.rstrip("/") + "/"
        value = self._exact.get(form)
        if value is not None:
            return value
        for prefix, value in self._prefixes:
            if form.startswith(prefix):
                return value
        return None

    def __contains__(self, path: str) -> bool:
        form = path.rstrip("/") + "/"
        prefixes = self._prefix_tuple
        return form in self._exact or (bool(prefixes) and form.startswith(prefixes))


def slashed(path: str) -> str:
    """``path`` with exactly one trailing slash: the form in which paths are compared."""
    return path.rstrip("/") + "/"


def check_pattern(option: str, pattern: object) -> str:
    """Return ``pattern`` if it is a path pattern (a str starting with ``/``), else raise."""
    if not isinstance(pattern, str):
        raise TypeError(f"{option!r} paths must be str, got {show(pattern)}")
    if not pattern.startswith("/"):
        raise ValueError(f"{option!r} paths must start with '/', got {show(pattern)}")
    return pattern


def path_set(option: str, patterns: Iterable[object]) -> Paths[bool]:
    """The `Paths` of ``option``'s list of patterns (``exempt``), each checked."""
    if isinstance(patterns, (str, bytes)):
        raise TypeError(f"{option!r} must be a list of paths, not a single path: {show(patterns)}")
    return Paths(option, ((check_pattern(option, pattern), True) for pattern in patterns))


def route_path(path: str, root_path: str) -> str:
    """``path`` without the ASGI ``root_path`` it starts with, as routing sees it.

    Behind ``--root-path /api`` uvicorn sends ``path="/api/login"`` and hypercorn or granian
    ``path="/login"``; Starlette routes on the path without ``root_path`` when it starts with
    it, and so do ``exempt``, ``routes`` and the admin path, whatever the server. ``/apiary``
    does not start with the root path ``/api`` (only ``/api`` itself, which is ``/``, and what
    is under ``/api/``).
    """
    if root_path and path.startswith(root_path):
        rest = path[len(root_path) :]
        if not rest:
            return "/"
        if rest[0] == "/":
            return rest
    return path
