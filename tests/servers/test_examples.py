"""Every app in examples/ is imported and driven in-process, so none can rot.

Each example's header also says how to install and run it. Those two commands are parsed from
the header and run as written (only the port 8000 is replaced by a free one): every example's
run command is started with the test venv's executables first on PATH, after checking that the
install command's packages are in the test venv; and the Django example, the one a newcomer
reported, is installed and run in a fresh venv (no system site-packages) exactly by its header.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import wsgiref.util
import wsgiref.validate
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NAMES = sorted(path.stem for path in EXAMPLES.glob("*.py"))
IP = "203.0.113.7"


def load(name):
    """Import examples/<name>.py as a fresh module (fresh buckets each time)."""
    module_name = f"example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # Django resolves ROOT_URLCONF by name
    spec.loader.exec_module(module)
    return module


def asgi_get(app, paths, ip=IP, **kwargs):
    async def scenario():
        transport = httpx.ASGITransport(app=app, client=(ip, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.request(kwargs.get("method", "GET"), path) for path in paths]

    return asyncio.run(scenario())


def wsgi_get(app, path="/", ip=IP, headers=None, method="GET", body=b""):
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "REMOTE_ADDR": ip,
        "wsgi.input": io.BytesIO(body),
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    wsgiref.util.setup_testing_defaults(environ)
    captured = {}

    def start_response(status, fields, exc_info=None):
        captured["status"], captured["headers"] = int(status.split()[0]), dict(fields)
        return lambda data: None

    result = wsgiref.validate.validator(app)(environ, start_response)
    try:
        content = b"".join(result)
    finally:
        result.close()
    return captured["status"], captured["headers"], content


def test_fastapi_example(monkeypatch):
    """FastAPI: 10 per client, /login stricter (3), /health exempt, admin API from env."""
    monkeypatch.setenv("TOKENBUCKET_ADMIN_TOKEN", "example-token-0123")
    module = load("fastapi_app")
    responses = asgi_get(module.app, ["/"] * 11)
    assert [r.status_code for r in responses] == [200] * 10 + [429]
    assert responses[0].json() == {"message": "hello"}
    logins = asgi_get(module.app, ["/login"] * 4, method="POST")
    assert [r.status_code for r in logins] == [200, 200, 200, 429]
    assert logins[3].headers["retry-after"] == "10"
    assert [r.status_code for r in asgi_get(module.app, ["/health"] * 3)] == [200] * 3

    async def update():
        transport = httpx.ASGITransport(app=module.app, client=(IP, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                "/admin/update-rule",
                json={"client_id": IP, "capacity": 20},
                headers={"Authorization": "Bearer example-token-0123"},
            )

    assert asyncio.run(update()).json()["capacity"] == 20
    assert asgi_get(module.app, ["/"])[0].status_code == 200


def test_fastapi_example_without_token_has_no_admin_api(monkeypatch):
    """Without TOKENBUCKET_ADMIN_TOKEN the admin path is an ordinary (missing) route."""
    monkeypatch.delenv("TOKENBUCKET_ADMIN_TOKEN", raising=False)
    module = load("fastapi_app")
    response = asgi_get(module.app, ["/admin/update-rule"])[0]
    assert response.status_code == 404


def test_starlette_example_counts_denials():
    """Starlette: legacy headers, and on_decision counts denials per path."""
    module = load("starlette_app")
    responses = asgi_get(module.app, ["/"] * 12)
    assert [r.status_code for r in responses].count(429) == 2
    assert responses[0].headers["x-ratelimit-limit"] == "10"
    assert "ratelimit" not in responses[0].headers
    stats = asgi_get(module.app, ["/stats"])[0]
    assert stats.json() == {"/": 2}


def test_flask_example_keys_by_api_key():
    """Flask: requests with a known API key have their customer's bucket."""
    module = load("flask_app")
    app = module.app.wsgi_app
    statuses = [wsgi_get(app)[0] for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    status, headers, _ = wsgi_get(app, headers={"X-API-Key": "demo-key-alice"})
    assert status == 200
    assert headers["RateLimit"].startswith('"default";r=9;')
    assert module.registry.tokens("customer:alice") == pytest.approx(9.0, abs=0.5)  # real clock


def test_flask_example_key_cannot_be_chosen_by_the_client():
    """Review item 1: the key was the X-API-Key header, unchecked, so a client escaped its
    limit with a new key per request, or emptied another client's bucket by naming it."""
    module = load("flask_app")
    app = module.app.wsgi_app
    # A made-up key each time: still the client's own IP bucket, and the 11th is refused.
    statuses = [wsgi_get(app, headers={"X-API-Key": f"made-up-{i}"})[0] for i in range(11)]
    assert statuses == [200] * 10 + [429]
    # Naming another client's IP (or its key's customer) takes nothing from that client.
    for name in ("198.51.100.1", "ip:198.51.100.1", "alice", "customer:alice"):
        assert wsgi_get(app, ip="192.0.2.9", headers={"X-API-Key": name})[0] == 200
    assert module.registry.tokens("ip:198.51.100.1") == 10.0
    assert module.registry.tokens("customer:alice") == 10.0
    assert module.registry.tokens("ip:192.0.2.9") == pytest.approx(6.0, abs=0.5)  # real clock


DJANGO_RUN = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_examples import load, wsgi_get
module = load("django_app")
results = [wsgi_get(module.application) for _ in range(11)]
print(json.dumps([[s, dict(h), b.decode()] for s, h, b in results]))
"""


def test_django_example():
    """Django: the WSGI application behind the middleware.

    In a process of its own: Django's settings are configured once per process, and the
    integration tests (tests/adapters/test_django.py) configure their own.
    """
    pytest.importorskip("django")
    run = subprocess.run(
        [sys.executable, "-c", DJANGO_RUN, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    results = json.loads(run.stdout)
    assert [status for status, _, _ in results] == [200] * 10 + [429]
    assert results[0][2] == '{"message": "hello"}'
    assert results[10][1]["Retry-After"] == "1"


def test_wsgiref_example_admin_api():
    """The zero-dependency app: burst, 429, then the admin API raises the limit."""
    module = load("wsgiref_app")
    statuses = [wsgi_get(module.app)[0] for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    body = b'{"client_id": "203.0.113.7", "capacity": 12}'
    status, _, content = wsgi_get(
        module.app,
        "/admin/update-rule",
        method="POST",
        body=body,
        headers={"Authorization": f"Bearer {module.token}"},
    )
    assert status == 200
    assert b'"capacity": 12' in content
    assert [wsgi_get(module.app)[0] for _ in range(3)] == [200, 200, 429]


# -- the headers' commands, run as written -------------------------------------------------------


def header_commands(name):
    """The (install, run) command lines of an example's header, comments removed."""
    lines = [line.strip() for line in (EXAMPLES / f"{name}.py").read_text().splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("pip install "))
    install, run = lines[start], lines[start + 1]
    return install, run.split("  #")[0].strip()


def test_every_example_has_header_commands():
    """Each header installs this checkout (not the PyPI name taken by another project)."""
    assert len(NAMES) == 5
    for name in NAMES:
        install, run = header_commands(name)
        words = shlex.split(install)
        assert words[:3] == ["pip", "install", "-e"], install
        assert words[3] in (".", ".[demo]"), install
        assert "tokenbucket" not in words, install
        assert run.count("8000") == 1, run


def installed(requirement):
    """Whether a requirement from a header (``.``, ``.[demo]`` or a name) is installed here."""
    if requirement.startswith("."):
        names = ["tokenbucket-ratelimit"]
        if requirement == ".[demo]":
            names += ["fastapi", "uvicorn"]
    else:
        names = [requirement]
    for name in names:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return False
    return True


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_header_command(run, env, timeout=30.0):
    """Start the run command on a free port; return the statuses of 11 GETs to / from it.

    Each example says where it serves as it starts (its server's line, or its own print): the
    output, read once it is stopped, names the address."""
    port = free_port()
    words = shlex.split(run.replace("8000", str(port)))
    assignments = {}
    while re.fullmatch(r"[A-Z_]+=.*", words[0]):
        variable, _, value = words.pop(0).partition("=")
        assignments[variable] = value
    process = subprocess.Popen(
        words,
        cwd=ROOT,
        env={**env, **assignments},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, process.communicate()[0].decode()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{run}: nothing listens on {port}"
                time.sleep(0.1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            statuses = [client.get("/").status_code for _ in range(11)]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output = process.stdout.read().decode()
        process.stdout.close()
    assert f"http://127.0.0.1:{port}" in output, f"{run}: says nothing of where it serves"
    return statuses


@pytest.mark.parametrize("name", NAMES)
def test_header_run_command_serves(name):
    """The header's run command, as written, serves the example (burst of 10, then 429)."""
    install, run = header_commands(name)
    missing = [req for req in shlex.split(install)[2:] if req != "-e" and not installed(req)]
    assert not missing, f"the test venv lacks what {name}'s header installs: {missing}"
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    assert run_header_command(run, env) == [200] * 10 + [429]


def test_django_header_in_a_fresh_venv(tmp_path):
    """A fresh venv, the header's install command, then its run command: the app serves."""
    install, run = header_commands("django_app")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    # As if activated: the venv's bin first on PATH, then the system's (not the test venv's).
    system_path = [
        entry
        for entry in env.get("PATH", "").split(os.pathsep)
        if Path(entry).resolve() != Path(sys.executable).parent.resolve()
    ]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *system_path])
    env["VIRTUAL_ENV"] = str(venv)
    result = subprocess.run(
        ["bash", "-c", install],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import django, tokenbucket; print(django.__file__)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert Path(probe.stdout.strip()).is_relative_to(venv)  # installed there, by the header
    assert run_header_command(run, env) == [200] * 10 + [429]
