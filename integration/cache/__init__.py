"""The node result cache: content-addressed keys and the storage tiers behind them."""

from integration.cache.keys import CACHE_VERSION, NodeKey, graph_keys, node_key, value_digest

__all__ = ["CACHE_VERSION", "NodeKey", "graph_keys", "node_key", "value_digest"]
