"""Harnesses that drive both middlewares the same way, in-process, with a manual clock.

``make(**options)`` (parametrised over ASGI and WSGI) returns a `Harness` whose ``request()``
calls the middleware directly: a raw ASGI call on a fresh event loop, or a WSGI call through
``wsgiref.validate`` so that every WSGI test also checks PEP 3333 compliance.

Also a real redis-server for the Redis store's tests (``redis_server``, ``redis_url``,
``own_redis``), on 127.0.0.1 and a free port, without persistence, and a real Redis Cluster of
six such servers, 3 masters and 3 replicas, created with ``redis-cli --cluster create``
(``redis_cluster``, ``redis_cluster_url``). Those tests never skip: when redis-server or
redis-cli is missing or does not start, every test that needs it fails with a message saying
so (scripts/test.sh installs them).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import wsgiref.util
import wsgiref.validate
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import pytest

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket.asgi import RateLimitMiddleware as AsgiMiddleware
from tokenbucket.wsgi import RateLimitMiddleware as WsgiMiddleware

IP = "203.0.113.7"
TOKEN = "s3cret-Token_123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Result(NamedTuple):
    status: int
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    def all(self, name: str) -> List[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


class Harness:
    """One middleware around a small app that answers 200 ``app`` and records what it saw."""

    def __init__(self, kind: str, registry: Optional[BucketRegistry] = None, **options: Any):
        self.kind = kind
        self.clock = ManualClock()
        self.registry = registry or BucketRegistry(Rule(3, 1.0), clock=self.clock)
        self.seen: List[str] = []  # paths that reached the app
        self.app_headers: List[Tuple[str, str]] = []  # extra headers the app sets
        if kind == "asgi":
            self.middleware: Any = AsgiMiddleware(self._asgi_app, registry=self.registry, **options)
        else:
            self.middleware = WsgiMiddleware(self._wsgi_app, registry=self.registry, **options)

    async def _asgi_app(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.seen.append(scope["path"])
        headers = [(b"content-type", b"text/plain")]
        headers += [(k.lower().encode(), v.encode()) for k, v in self.app_headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"app"})

    def _wsgi_app(self, environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        self.seen.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain"), *self.app_headers])
        return [b"app"]

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        query: str = "",
        headers: Optional[Dict[str, str]] = None,
        body: bytes = b"",
        client: Optional[str] = IP,
        chunks: Optional[Sequence[bytes]] = None,
        content_length: Optional[str] = "auto",
    ) -> Result:
        """Send one request. ``chunks`` splits an ASGI body; ``content_length=None`` omits it."""
        fields = dict(headers or {})
        if content_length == "auto":
            content_length = str(len(body)) if body or method in ("POST", "PUT") else None
        if self.kind == "asgi":
            return asyncio.run(
                self._asgi(method, path, query, fields, body, client, chunks, content_length)
            )
        return self._wsgi(method, path, query, fields, body, client, content_length)

    async def _asgi(
        self,
        method: str,
        path: str,
        query: str,
        fields: Dict[str, str],
        body: bytes,
        client: Optional[str],
        chunks: Optional[Sequence[bytes]],
        content_length: Optional[str],
    ) -> Result:
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in fields.items()]
        if content_length is not None:
            raw.append((b"content-length", content_length.encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode("latin-1"),
            "headers": raw,
            "client": None if client is None else (client, 40000),
            "server": ("testserver", 80),
        }
        parts = list(chunks) if chunks is not None else [body]
        messages = [
            {"type": "http.request", "body": part, "more_body": index < len(parts) - 1}
            for index, part in enumerate(parts)
        ]
        sent: List[Dict[str, Any]] = []

        async def receive() -> Dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Dict[str, Any]) -> None:
            sent.append(message)

        await self.middleware(scope, receive, send)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"], sent
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in sent[0]["headers"]]
        for name, _ in headers:
            assert name == name.lower(), f"ASGI header name not lower case: {name}"
        return Result(sent[0]["status"], headers, sent[1].get("body", b""))

    def _wsgi(
        self,
        method: str,
        path: str,
        query: str,
        fields: Dict[str, str],
        body: bytes,
        client: Optional[str],
        content_length: Optional[str],
    ) -> Result:
        environ: Dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "wsgi.input": io.BytesIO(body),
        }
        if client is not None:
            environ["REMOTE_ADDR"] = client
        if content_length is not None:
            environ["CONTENT_LENGTH"] = content_length
        for name, value in fields.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ[key] = value
            else:
                environ["HTTP_" + key] = value
        wsgiref.util.setup_testing_defaults(environ)
        if client is None:
            environ.pop("REMOTE_ADDR", None)
        captured: Dict[str, Any] = {}

        def start_response(
            status: str, headers: List[Tuple[str, str]], exc_info: Any = None
        ) -> Any:
            captured["status"] = status
            captured["headers"] = headers
            return lambda data: None

        app = wsgiref.validate.validator(self.middleware)
        result = app(environ, start_response)
        try:
            body_out = b"".join(result)
        finally:
            result.close()
        return Result(int(captured["status"].split()[0]), list(captured["headers"]), body_out)


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(kind: str) -> Any:
    """``make(**options)``: a Harness of the parametrised kind with those middleware options."""

    def factory(**options: Any) -> Harness:
        return Harness(kind, **options)

    return factory


# -- a real redis-server -------------------------------------------------------------------------

STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING on 127.0.0.1:port (raw RESP, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(b"*1\r\n$4\r\nPING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process that a test can stop and start again on the same port."""

    def __init__(self, executable: str = "redis-server") -> None:
        self.executable = executable
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="tokenbucket-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def options(self) -> List[str]:
        """The server's command-line options: loopback, this port, no persistence."""
        return [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
            "--loglevel",
            "warning",
        ]

    def new_ports(self) -> None:
        """Pick another port after the one found free was taken before the server bound it."""
        self.port = free_port()

    def start(self) -> None:
        path = shutil.which(self.executable)
        if path is None:
            pytest.fail(
                f"{self.executable!r} not found on PATH: the Redis tests need a real server "
                "(apt-get install -y redis-server; scripts/test.sh installs it)",
                pytrace=False,
            )
        # A port found free can be taken before the server binds it: try a few.
        for _ in range(3):
            self._log = open(f"{self._dir.name}/redis.log", "wb")  # noqa: SIM115
            self.process = subprocess.Popen(
                [path, *self.options()],
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while time.monotonic() < deadline and self.process.poll() is None:
                if ping(self.port):
                    return
                time.sleep(0.01)
            output = self._stop_process()
            if self.process.returncode is not None and b"Address already in use" in output:
                self.new_ports()
                continue
            break
        pytest.fail(
            f"redis-server did not start on 127.0.0.1:{self.port} within {STARTUP_TIMEOUT} s; "
            f"its output:\n{output.decode(errors='replace')}",
            pytrace=False,
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); its data is gone (no persistence)."""
        self._stop_process()

    def _stop_process(self) -> bytes:
        process = self.process
        if process is None:
            return b""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log.close()
        with open(self._log.name, "rb") as log:
            return log.read()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


@pytest.fixture(scope="session")
def redis_server():
    """A redis-server shared by the whole session. Tests must not stop it."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server):
    """The shared server's URL, its data flushed before the test."""
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as connection:
        connection.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
        assert connection.recv(64).startswith(b"+OK")
    return redis_server.url


@pytest.fixture
def own_redis():
    """A redis-server for this test alone, which it may stop and start again (same port)."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


# -- a real Redis Cluster ------------------------------------------------------------------------

#: How long a master may be silent before the others mark it failed and its replica takes over
#: (redis-server's ``cluster-node-timeout``): small, so that a failover takes a few seconds.
CLUSTER_NODE_TIMEOUT_MS = 1000


def free_port_pair() -> int:
    """A free port whose cluster bus port (the port + 10000, as Redis 6 requires) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class ClusterNode(RedisServer):
    """One redis-server in cluster mode, with its nodes.conf in its own directory.

    Started again after a kill, the node reads its nodes.conf and rejoins the cluster (as a
    replica of whichever node took over its slots). Its cluster bus listens on its port + 10000.
    """

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port_pair()

    def options(self) -> List[str]:
        return [
            *super().options(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(CLUSTER_NODE_TIMEOUT_MS),
            "--repl-diskless-sync-delay",  # a replica syncs at once, not after 5 s
            "0",
        ]

    def new_ports(self) -> None:
        self.port = free_port_pair()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self, *args: Any) -> Any:
        """Run one command on this node (redis-py, raw reply decoded as text)."""
        import redis

        with redis.Redis(port=self.port, decode_responses=True, socket_timeout=5) as client:
            return client.execute_command(*args)

    def info(self, section: str) -> Dict[str, Any]:
        """``INFO section`` as a dict of its fields."""
        return dict(self.command("INFO", section))

    def kill(self) -> None:
        """Kill the server by its PID (SIGKILL: no goodbye to the cluster), as a crash would."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(5)
        self.stop()  # closes its log


def _redis_cli() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        pytest.fail(
            "'redis-cli' not found on PATH: the Redis Cluster tests need it to create the cluster "
            "(apt-get install -y redis-tools; scripts/test.sh installs it)",
            pytrace=False,
        )
    return path


class LocalCluster:
    """A Redis Cluster on loopback: 3 masters and 3 replicas, no persistence."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        self.replicas = replicas
        self.nodes = [ClusterNode() for _ in range(masters * (1 + replicas))]

    @property
    def url(self) -> str:
        """A running node's URL (a cluster client discovers the others from it)."""
        return next(node.url for node in self.nodes if node.running)

    def start(self) -> None:
        """Start every node, create the cluster, wait until every node says it is ok."""
        cli = _redis_cli()
        for node in self.nodes:
            node.start()
        create = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if create.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{create.stdout}{create.stderr}")
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node sees the cluster ok, all nodes connected."""
        running = [node for node in self.nodes if node.running]
        deadline = time.monotonic() + timeout
        while True:
            states = {node.port: self._state(node, len(running)) for node in running}
            if all(state == "ok" for state in states.values()):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"the Redis Cluster is not ok after {timeout} s: {states}")
            time.sleep(0.05)

    @staticmethod
    def _state(node: ClusterNode, expected: int) -> str:
        info = node.info("replication")
        if info.get("role") == "slave" and info.get("master_link_status") != "up":
            return "replica not synced"
        lines = node.command("CLUSTER", "NODES").splitlines()
        if sum("fail" not in line.split(" ")[2] for line in lines if line.strip()) < expected:
            return "nodes not connected"
        info = node.command("CLUSTER", "INFO")
        return "ok" if "cluster_state:ok" in info else "state not ok"

    def masters(self) -> List[ClusterNode]:
        return [n for n in self.nodes if n.running and n.info("replication")["role"] == "master"]

    def master_for(self, key: str) -> ClusterNode:
        """The running master that holds ``key``'s slot."""
        slot = int(self.masters()[0].command("CLUSTER", "KEYSLOT", key))
        for node in self.masters():
            mine = node.command("CLUSTER", "NODES")
            myself = next(line for line in mine.splitlines() if "myself" in line)
            for part in myself.split(" ")[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return node
        raise AssertionError(f"no running master holds slot {slot} of {key!r}")

    def heal(self) -> None:
        """Start every node that was killed again (it rejoins) and wait for the cluster."""
        for node in self.nodes:
            if not node.running:
                node.start()
        self.wait_ok()

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for node in self.masters():
            node.command("FLUSHALL")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@pytest.fixture(scope="session")
def redis_cluster():
    """A Redis Cluster (3 masters, 3 replicas) shared by the session. A test may kill nodes:
    ``redis_cluster_url`` restarts them (they rejoin) before the next test uses it."""
    cluster = LocalCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_cluster_url(redis_cluster):
    """A URL of the shared cluster, every node up, its data flushed before the test."""
    redis_cluster.heal()
    redis_cluster.flush()
    return redis_cluster.url
