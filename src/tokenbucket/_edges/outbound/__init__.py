"""Calling rate-limited APIs: the code the ``httpx`` and ``requests`` shells share.

`fields` reads a server's rate-limit header fields (sans-IO), `follow` turns them into changes
of a key's budget in a registry, `drive` runs one request through those steps.
"""
