"""Django: the middleware in settings.MIDDLEWARE and the view decorator, through django.test."""

from __future__ import annotations

import json

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tests-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["tokenbucket.django.RateLimitMiddleware"],
        INSTALLED_APPS=[],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": []}],
        TOKENBUCKET={},
    )
    django.setup()

from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from django.views import View  # noqa: E402

from tokenbucket import BucketRegistry, ManualClock, MemoryStore  # noqa: E402
from tokenbucket.django import Ratelimited, ratelimit  # noqa: E402
from tokenbucket.proxies import TrustedProxyKey  # noqa: E402

QUOTA = "https://iana.org/assignments/http-problem-types#quota-exceeded"
CLOCK = ManualClock()


def index(request):
    return HttpResponse("hello")


@ratelimit("2/minute", key="ip")
def login(request):
    return HttpResponse("login")


@ratelimit("3/minute", key="header:x-api-key", method="post")
def upload(request):
    return HttpResponse("up")


@ratelimit("3/minute")
@ratelimit("5/hour")
def stacked(request):
    return HttpResponse("stacked")


@ratelimit("1/minute")
class Report(View):
    def get(self, request):
        return HttpResponse("report")


def own_denied(request, exception: Ratelimited):
    return JsonResponse({"mine": True, "retry": exception.retry_after}, status=429)


urlpatterns = [
    path("", index),
    path("login/", login),
    path("upload/", upload),
    path("stacked/", stacked),
    path("report/", Report.as_view()),
]


def store_factory():
    return MemoryStore(clock=CLOCK)


def settings_with(**extra):
    return override_settings(TOKENBUCKET={"STORE": store_factory(), **extra})


def test_middleware_is_exact_and_keeps_the_headers():
    with settings_with(DEFAULT="10/second"):
        client = Client()
        responses = [client.get("/") for _ in range(12)]
    assert [r.status_code for r in responses] == [200] * 10 + [429] * 2
    first, last = responses[0], responses[-1]
    assert first["RateLimit-Policy"] == '"default";q=10;w=1'
    assert first["RateLimit"] == '"default";r=9;t=1'
    assert last["Retry-After"] == "1"
    assert last["RateLimit"] == '"default";r=0;t=1'
    assert last["Content-Type"] == "application/problem+json"
    body = json.loads(last.content)
    assert body["type"] == QUOTA
    assert body["violated-policies"] == ["default"]


def test_routes_only_and_browsers_get_html():
    with settings_with(ROUTES={"/login/": "5/minute"}, EXEMPT=["/upload/"]):
        client = Client()
        assert all(client.get("/").status_code == 200 for _ in range(20))  # no DEFAULT
        statuses = [client.get("/report/", HTTP_ACCEPT="text/html").status_code for _ in range(1)]
        assert statuses == [200]
        page = None
        for _ in range(6):
            page = client.post("/login/", HTTP_ACCEPT="text/html,application/xhtml+xml")
        api = client.get("/login/", HTTP_ACCEPT="application/json")
    assert page is not None
    assert page.status_code == 429
    assert page["Content-Type"].startswith("text/html")
    assert b"Please retry in" in page.content
    # The route's 5/minute refuses the sixth (the decorator's 2/minute refused the third).
    assert page["RateLimit"] == '"/login/";r=0;t=12'
    assert json.loads(api.content)["violated-policies"] == ["/login/"]


def test_a_denied_view_of_the_projects_own(tmp_path):
    with settings_with(DEFAULT="1/minute", DENIED_VIEW=f"{__name__}.own_denied"):
        client = Client()
        client.get("/")
        denied = client.get("/")
    assert denied.status_code == 429
    assert json.loads(denied.content) == {"mine": True, "retry": 60}
    assert denied["Retry-After"] == "60"
    assert denied["RateLimit-Policy"] == '"default";q=1;w=60'


def test_the_template_429_html(tmp_path):
    (tmp_path / "429.html").write_text("Wait {{ retry_after }}s ({{ decision.policy }})")
    templates = [
        {"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [str(tmp_path)]}
    ]
    with override_settings(TEMPLATES=templates), settings_with(DEFAULT="1/minute"):
        client = Client()
        client.get("/", HTTP_ACCEPT="text/html")
        page = client.get("/", HTTP_ACCEPT="text/html")
    assert page.status_code == 429
    assert page.content == b"Wait 60s (default)"


def test_the_decorator_on_functions_and_classes():
    with settings_with():
        client = Client()
        logins = [client.get("/login/").status_code for _ in range(3)]
        reports = [client.get("/report/").status_code for _ in range(2)]
        last = client.get("/login/")
    assert logins == [200, 200, 429]
    assert reports == [200, 429]
    assert last["RateLimit"] == '"2/minute";r=0;t=30'
    assert last["Retry-After"] == "30"
    assert json.loads(last.content)["violated-policies"] == ["2/minute"]


def test_the_decorator_keys_by_header_and_counts_only_its_methods():
    with settings_with():
        client = Client()
        gets = [client.get("/upload/").status_code for _ in range(5)]
        alice = [client.post("/upload/", HTTP_X_API_KEY="alice").status_code for _ in range(4)]
        bob = client.post("/upload/", HTTP_X_API_KEY="bob")
    assert gets == [200] * 5
    assert alice == [200, 200, 200, 429]
    assert bob.status_code == 200


def test_trusted_proxies_key_the_middleware():
    with settings_with(DEFAULT="1/minute", KEY=TrustedProxyKey(["127.0.0.1/32"])):
        client = Client()
        one = client.get("/", HTTP_X_FORWARDED_FOR="198.51.100.1")
        two = client.get("/", HTTP_X_FORWARDED_FOR="198.51.100.2")
        again = client.get("/", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert (one.status_code, two.status_code, again.status_code) == (200, 200, 429)


def test_a_registry_as_default():
    registry = BucketRegistry("2/second", clock=CLOCK)
    with override_settings(TOKENBUCKET={"DEFAULT": registry}):
        client = Client()
        statuses = [client.get("/").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert registry.tokens("127.0.0.1") == 0


@pytest.mark.parametrize(
    ("setting", "error", "match"),
    [
        ({"DEFAULT": 10}, TypeError, "Rule.parse"),
        ({"ROUTES": {"/login/": "5/fortnight"}}, ValueError, "rate string"),
        ({"DEFUALT": "1/s"}, ValueError, "unknown keys \\['DEFUALT'\\]"),
    ],
)
def test_bad_settings_fail_at_startup(setting, error, match):
    from tokenbucket.django import RateLimitMiddleware

    with override_settings(TOKENBUCKET=setting), pytest.raises(error, match=match):
        RateLimitMiddleware(lambda request: HttpResponse())


def test_bad_decorator_arguments():
    with pytest.raises(ValueError, match="'key' must be 'ip', 'user'"):
        ratelimit("1/s", key="ipp")
    with pytest.raises(TypeError, match="'method' must be"):
        ratelimit("1/s", method=[1])


def test_the_admin_api_through_the_middleware():
    token = {"HTTP_AUTHORIZATION": "Bearer s3cret-Token_123"}
    with settings_with(DEFAULT="2/minute", ADMIN_TOKEN="s3cret-Token_123"):
        client = Client()
        guess = client.post(
            "/admin/update-rule",
            data='{"client_id": "127.0.0.1", "capacity": 50}',
            content_type="application/json",
            HTTP_AUTHORIZATION="Bearer guess",
        )
        update = client.post(
            "/admin/update-rule",
            data='{"client_id": "127.0.0.1", "capacity": 4}',
            content_type="application/json",
            **token,
        )
        bad = client.post("/admin/update-rule", data="{", content_type="application/json", **token)
        codes = [client.get("/").status_code for _ in range(4)]
        read = client.get("/admin/update-rule", {"client_id": "127.0.0.1"}, **token)
    assert guess.status_code == 403  # counted: one of the two tokens
    assert update.status_code == 200
    assert json.loads(update.content)["capacity"] == 4
    assert bad.status_code == 400
    assert codes == [200, 200, 200, 429]  # 4, less the one the wrong token took
    assert json.loads(read.content)["capacity"] == 4


def test_stacked_decorators_count_in_buckets_of_their_own():
    # Regression: both decorators counted in one bucket key, so each request took two tokens.
    with settings_with():
        client = Client()
        codes = [client.get("/stacked/").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]


def test_the_middleware_answers_as_the_wsgi_one_does():
    # One plan, two edges: the same requests get the same statuses, fields and problem details.
    from wsgiref.util import setup_testing_defaults

    from tokenbucket.asgi import problem_details
    from tokenbucket.wsgi import RateLimitMiddleware

    routes = {"/api/": {"burst": "2/minute", "daily": "3/day"}}
    names = ("RateLimit", "RateLimit-Policy", "Retry-After")
    requests = ["/", "/", "/", "/", "/api/", "/api/", "/api/", "/health/"]

    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    wsgi = RateLimitMiddleware(
        hello,
        registry=BucketRegistry("3/minute", store=MemoryStore(clock=ManualClock())),
        routes=routes,
        exempt=["/health"],
        denied=problem_details,
    )
    started = []
    seen_wsgi = []
    for path_info in requests:
        environ = {"PATH_INFO": path_info, "REMOTE_ADDR": "127.0.0.1"}
        setup_testing_defaults(environ)
        body = b"".join(wsgi(environ, lambda status, headers: started.append((status, headers))))
        status, headers = started.pop()
        fields = dict(headers)
        seen_wsgi.append(
            (int(status[:3]), [fields.get(name) for name in names], body[:1] == b"{" and body)
        )

    seen_django = []
    store = MemoryStore(clock=ManualClock())
    with override_settings(
        TOKENBUCKET={"STORE": store, "DEFAULT": "3/minute", "ROUTES": routes, "EXEMPT": ["/health"]}
    ):
        client = Client()
        for path_info in requests:
            answer = client.get(path_info, HTTP_ACCEPT="application/json")
            json_body = answer.content if answer.status_code == 429 else False
            status = answer.status_code if answer.status_code != 404 else 200
            seen_django.append((status, [answer.get(name) for name in names], json_body))
    assert [entry[0] for entry in seen_django] == [200, 200, 200, 429, 200, 200, 429, 200]
    for (status, fields, body), (status_d, fields_d, body_d) in zip(seen_wsgi, seen_django):
        assert (status, fields) == (status_d, fields_d)
        if status == 429:
            assert json.loads(body) == json.loads(body_d)
