"""No routes: the docs only build the WSGI application."""

urlpatterns: list = []
