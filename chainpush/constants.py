"""Every MongoDB collection name and Redis key/channel chainpush uses, in one place.

A deployment may share one Redis and one MongoDB between several chainpush clusters: each name
below is built under a *namespace* (``RedisNames(namespace="cp")``) so tests and clusters
never collide. TTLs are documented next to the key that carries them.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- MongoDB collections -------------------------------------------------------------------

#: one document per stored message (record + status); ``_id`` is the message id.
EVENTS = "events"
#: one document per (topic, message) with its gap-free per-topic offset.
MESSAGES = "messages"
#: one document per topic stream: ``_id`` = topic, ``{epoch, created_at}``. Written once (with
#: ``$setOnInsert``) before the topic's first message; a wiped store makes new epochs.
STREAMS = "streams"
#: one document per watcher cursor; ``_id`` is ``<chain_id>:<watcher name>``.
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True, slots=True)
class RedisNames:
    """Redis keys and channels under one namespace (default ``cp``)."""

    namespace: str = "cp"

    def node(self, node_id: str) -> str:
        """``<ns>:node:<node_id>`` → the push node's websocket URL.

        TTL ``node_ttl_s`` (default 15 s), refreshed every ``heartbeat_s`` (5 s): a node that dies
        drops out of routing within one TTL without anyone cleaning up.
        """
        return f"{self.namespace}:node:{node_id}"

    def user(self, user_id: str) -> str:
        """``<ns>:user:<user_id>`` → hash node_id → expiry (unix s) of the user's connections.

        The key itself carries a TTL of ``node_ttl_s``, refreshed by the holding node's heartbeat.
        """
        return f"{self.namespace}:user:{user_id}"

    def topic(self, topic: str) -> str:
        """``<ns>:topic:<topic>`` → hash node_id → expiry (unix s): nodes with subscribers.

        Dispatch sends one copy per live node listed here. Entries older than their expiry are
        ignored and pruned; the key carries a TTL of ``node_ttl_s`` as a backstop.
        """
        return f"{self.namespace}:topic:{topic}"

    def inbox(self, node_id: str) -> str:
        """``<ns>:inbox:<node_id>``: the pub/sub channel a push node listens on."""
        return f"{self.namespace}:inbox:{node_id}"
