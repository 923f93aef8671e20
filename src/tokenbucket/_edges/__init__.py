"""Edges: translations between the outside and the registry or the sans-IO ``_http`` layer.

The ASGI and WSGI I/O, the decorator for plain functions, the outbound clients' field reading
and pacing, the demo's command line. They decide nothing themselves.
"""
