"""The admin API's options, checked: its token, its path and the largest bodies it reads.

Knows: what a valid ``admin_token``, ``admin_path``, ``max_body`` and ``max_import_body`` are,
and their defaults. `Options` checks them with every other option; the admin API (``admin``)
is built from the checked values. Must not know: requests, policies, the admin API itself.
"""

from __future__ import annotations

from .._core.validate import show

DEFAULT_ADMIN_PATH = "/admin/update-rule"
DEFAULT_MAX_BODY = 4096
#: The default of ``max_import_body``: 8 MiB, about 100,000 overrides.
DEFAULT_MAX_IMPORT_BODY = 8 * 1024 * 1024
#: The shortest admin token accepted: a guessable one would hand every limit to whoever guesses.
MIN_TOKEN_LENGTH = 16


def check_admin_token(token: object) -> str:
    """Return ``token`` if it is a valid ``admin_token``, else raise (never showing it)."""
    if not isinstance(token, str):
        raise TypeError(f"'admin_token' must be a str or None, got {show(token)}")
    if not token:
        raise ValueError("'admin_token' must be a non-empty str (or None to disable the API)")
    if not all("!" <= char <= "~" for char in token):
        raise ValueError(
            "'admin_token' must be printable ASCII without spaces "
            "(for example secrets.token_urlsafe(32))"
        )
    if len(token) < MIN_TOKEN_LENGTH:  # its length only: the token is a secret
        raise ValueError(
            f"'admin_token' must be at least {MIN_TOKEN_LENGTH} characters, got "
            f"{len(token)} (for example secrets.token_urlsafe(32))"
        )
    return token


def check_admin_path(path: object) -> str:
    """Return ``path`` if it is a valid ``admin_path`` (a str starting with ``/``), else raise."""
    if not isinstance(path, str):
        raise TypeError(f"'admin_path' must be a str, got {show(path)}")
    if not path.startswith("/"):
        raise ValueError(f"'admin_path' must start with '/', got {show(path)}")
    return path


def check_max_body(size: object, name: str = "max_body") -> int:
    """Return ``size`` if it is a valid ``max_body`` (an int >= 1), else raise."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"{name!r} must be an int, got {show(size)}")
    if size < 1:
        raise ValueError(f"{name!r} must be >= 1, got {show(size)}")
    return size
