"""The core: one bucket's exact arithmetic, the rule and decision values, clocks, input checks.

Nothing here keeps state or knows about stores, registries or HTTP; everything else builds on it.
"""
