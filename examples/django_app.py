"""Django, in one file: the WSGI application behind tokenbucket's WSGI middleware.

From the root of a clone, in a virtualenv (python3 -m venv .venv && . .venv/bin/activate):

    pip install -e . django
    python examples/django_app.py 8000    # serves http://127.0.0.1:8000/ with wsgiref

(Once tokenbucket-ratelimit is on PyPI: pip install tokenbucket-ratelimit django.)
"""

import sys

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="example-only-not-secret",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=[],
    )

from django.core.wsgi import get_wsgi_application
from django.http import JsonResponse
from django.urls import path

from tokenbucket import BucketRegistry, Rule
from tokenbucket.wsgi import RateLimitMiddleware


def index(request):
    return JsonResponse({"message": "hello"})


urlpatterns = [path("", index)]

registry = BucketRegistry(Rule(capacity=10, refill_rate=1.0))
# In a Django project, wrap the application in wsgi.py the same way.
application = RateLimitMiddleware(get_wsgi_application(), registry=registry)

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = make_server("127.0.0.1", port, application)
    print(f"Django behind the rate limiter on http://127.0.0.1:{port}/", flush=True)
    server.serve_forever()
