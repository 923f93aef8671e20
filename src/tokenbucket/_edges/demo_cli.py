"""The demo's command line: option types, the help formatter, the check of the port.

What belongs here: the pieces of ``python -m tokenbucket.demo``'s command line that need no
FastAPI or uvicorn (``tokenbucket.demo`` builds the parser and the app from them). Nothing
here serves requests.
"""

from __future__ import annotations

import argparse
import socket
from typing import Optional, Union


def number(text: str) -> Union[int, float]:
    """An int if ``text`` is one, else a float (``Rule`` checks the value)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def max_keys_option(text: str) -> int:
    """``--max-keys`` (or its environment variable): an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}")
    return value


class DefaultsHelp(argparse.HelpFormatter):
    """``--help`` shows each option's default, unless there is none or its help names it."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def port_problem(host: str, port: int) -> Optional[str]:
    """Why ``host:port`` cannot be listened on now (``"Address already in use"``), or None.

    Checked before the banner is printed, so that a busy port is one line, not the banner
    followed by uvicorn's error. Binds as uvicorn will (``SO_REUSEADDR``: a port whose old
    connections are closing is free) and closes at once.
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
