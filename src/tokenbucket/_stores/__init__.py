"""Stores: where bucket state and rule overrides live (``store`` is the contract).

``memory`` is the in-process store (the default), ``redis`` the shared one (its Lua scripts
in ``redis/lua``). A store knows rules and keys, never a registry or HTTP.
"""
