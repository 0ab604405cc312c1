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
#: one document per watcher lease; ``_id`` is the checkpoint's key. No TTL: the leader renews it
#: every ``[watch] lease_renew_s`` (default 1 s) and a standby takes over once it has seen it
#: unchanged for ``[watch] lease_s`` (default 3 s) on its own clock, so a dead leader is replaced
#: within about lease_s + lease_renew_s; ``generation`` is the checkpoint's fencing token.
LEASES = "leases"
#: one document per contract name claimed by a watcher (``watcher.claims``): ``_id`` = the
#: ``[[contracts]]`` name, ``{chain_id, watch, addresses, source, claimed_at}``. No TTL: a name
#: belongs to its chain until that chain's watcher drops it from its config (or
#: ``chainpush watch --release-claim NAME``): its topics hold that chain's records.
CONTRACTS = "contracts"
#: webhook delivery state, no TTL (a restart resumes from it): ``hook:<name>`` per webhook
#: (paused, reason, rev), ``lane:<name>:<topic>`` per (webhook, topic) (acked cursor, pin, error).
WEBHOOKS = "webhooks"


@dataclass(frozen=True, slots=True)
class RedisNames:
    """Redis keys and channels under one namespace (default ``cp``)."""

    namespace: str = "cp"

    def nodes(self) -> str:
        """``<ns>:nodes`` → sorted set node_id → expiry (unix s): the live push nodes.

        Each node's heartbeat (``heartbeat_s``, 5 s) sets its score to now + ``node_ttl_s``
        (15 s); a member whose score has passed belongs to a node that died, and dispatch prunes
        it with its topic entries. No TTL on the key itself: it holds every node.
        """
        return f"{self.namespace}:nodes"

    def node(self, node_id: str) -> str:
        """``<ns>:node:<node_id>`` → the push node's websocket URL.

        TTL ``node_ttl_s`` (default 15 s), refreshed every ``heartbeat_s`` (5 s). The heartbeat
        sets it with ``GET``: finding it gone tells the node its registration lapsed (cut off from
        Redis too long, or Redis lost its data), so it writes its topics again.
        """
        return f"{self.namespace}:node:{node_id}"

    def node_topics(self, node_id: str) -> str:
        """``<ns>:node:<node_id>:topics`` → set of the topics the node registered.

        Lets a node that restarts under the same id (after a crash, which leaves its entries
        behind) remove what its previous run registered. No TTL.
        """
        return f"{self.namespace}:node:{node_id}:topics"

    def topic(self, topic: str) -> str:
        """``<ns>:topic:<topic>`` → hash node_id → registration time (unix s): nodes with
        subscribers to the topic.

        Written once when a node gets the topic's first subscriber and removed when its last one
        leaves, never rewritten by heartbeats (their cost stays O(1) in topics). Dispatch sends
        one copy per node listed here that is live in :meth:`nodes`, and prunes the others. No
        TTL: a topic key lives while some node serves it.
        """
        return f"{self.namespace}:topic:{topic}"

    def inbox(self, node_id: str) -> str:
        """``<ns>:inbox:<node_id>``: the pub/sub channel a push node listens on."""
        return f"{self.namespace}:inbox:{node_id}"
