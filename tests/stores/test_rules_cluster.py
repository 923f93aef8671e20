"""Shared rules and imports on a Redis Cluster; listing there is a documented limitation."""

from __future__ import annotations

import pytest

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket.redis import RedisStore


def test_shared_rules_and_import_work_on_a_cluster_and_listing_says_why_not(redis_cluster_url):
    stores = [RedisStore.from_url(redis_cluster_url, cluster=True) for _ in range(2)]
    clock = ManualClock()
    a, b = (BucketRegistry(Rule(5, 1.0), store=store) for store in stores)
    for registry in (a, b):
        registry.share_rules(interval=1.0, clock=clock)
        registry.consume("warm")
    a.update_default(capacity=8)
    clock.advance(1)
    assert b.consume("k").limit == 8
    document = {
        "version": 1,
        "default": {"capacity": 9, "refill_rate": 1.0},
        "overrides": [
            {"key": f"c{index}", "capacity": 2, "refill_rate": 1.0} for index in range(50)
        ],
    }
    assert a.import_rules(document) == 50
    assert all(b.rule_for(f"c{index}") == Rule(2, 1.0) for index in range(50))
    with pytest.raises(ValueError, match="Cluster"):
        a.list_rules()
    for store in stores:
        store.close()
