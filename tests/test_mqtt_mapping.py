"""Topic-to-(asset, point) mapping: ``+`` captures one level, ``#`` the rest of the topic."""

from __future__ import annotations

from edge.config import MqttSubscription
from edge.sources.mqtt import _Route, _wildcards


def test_plus_captures_one_level_and_hash_the_rest():
    sub = MqttSubscription(topic="site/+/sensors/#", asset="{1}", point="{2}")
    route = _Route(sub, _wildcards(sub.topic))
    assert route.resolve("site/trailer-7/sensors/air/supply") == ("trailer-7", "air/supply")
    assert route.resolve("site/trailer-7/sensors/door") == ("trailer-7", "door")
