"""The Redis stores' parts, below the public ``tokenbucket.redis``.

Plans without I/O, the failure policy, applied-once delivery, pipelining, listing, in-flight
slots, and the Lua scripts in ``lua/``.
"""
