"""A TCP proxy on loopback in front of a Redis server that can lose replies (for fault tests).

``ReplyDropper(port)`` listens on a free port of 127.0.0.1 and relays every connection to the
server on ``port``, byte for byte, from a thread of its own (so sync and async tests use it
alike). ``drop(n)`` arms it: each of the next ``n`` client chunks that ``match`` (default: any
holding an EVALSHA) is forwarded to Redis, which runs it; the proxy then reads the reply,
swallows it and closes both sides. To the client, the connection broke after its command was
sent, which is what a client retry (redis-py's ``Retry``) is for; Redis ran the command all
the same. With ``lose="command"`` the chunk itself is swallowed (Redis never sees it) before
the line goes dead. ``dropped`` counts the chunks whose reply (or command) was lost so far.

Example::

    with ReplyDropper(redis_port) as proxy:
        client = redis.Redis(port=proxy.port)
        proxy.drop()  # the next EVALSHA runs, its reply is lost, the connection closes
"""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Callable, Dict, Optional

Match = Callable[[bytes], bool]


def evalsha(chunk: bytes) -> bool:
    """Whether a chunk the client sent holds an EVALSHA (the store's script calls)."""
    return b"EVALSHA" in chunk.upper()


class ReplyDropper:
    """A relay to 127.0.0.1:``upstream_port`` that swallows chosen replies (see module)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.dropped = 0
        self._armed = 0
        self._match: Match = evalsha
        self._forward = True
        self._lock = threading.Lock()
        self._peers: Dict[socket.socket, socket.socket] = {}
        self._clients: Dict[socket.socket, bool] = {}  # True: the client's side of a pair
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._running = True
        self._thread = threading.Thread(target=self._run, name="reply-dropper", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """A ``redis://`` URL through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    def drop(self, times: int = 1, match: Optional[Match] = None, lose: str = "reply") -> None:
        """Lose the replies to (or, ``lose="command"``, the commands of) the next ``times``
        client chunks that ``match``."""
        assert lose in ("reply", "command"), lose
        with self._lock:
            self._armed = times
            self._match = match or evalsha
            self._forward = lose == "reply"

    def close(self) -> None:
        """Stop relaying and close every connection."""
        self._running = False
        self._thread.join(5)
        for each in [self._listener, *self._peers]:
            each.close()
        self._selector.close()

    def __enter__(self) -> ReplyDropper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while self._running:
            for key, _ in self._selector.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                elif sock in self._peers:
                    self._relay(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        for each, is_client in ((client, True), (server, False)):
            each.setblocking(True)
            self._clients[each] = is_client
            self._selector.register(each, selectors.EVENT_READ)
        self._peers[client], self._peers[server] = server, client

    def _relay(self, sock: socket.socket) -> None:
        peer = self._peers[sock]
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._hang_up(sock)
            return
        with self._lock:
            lose = self._clients[sock] and self._armed > 0 and self._match(data)
            if lose:
                self._armed -= 1
            forward = self._forward or not lose
        try:
            if forward:
                peer.sendall(data)
            if lose and forward:  # Redis runs it; its reply is read and lost
                peer.settimeout(10)
                peer.recv(65536)
        except OSError:
            pass
        if lose:  # then the line goes dead
            self.dropped += 1
        if lose:
            self._hang_up(sock)

    def _hang_up(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock)
        self._peers.pop(peer, None)
        for each in (sock, peer):
            self._clients.pop(each, None)
            self._selector.unregister(each)
            each.close()
