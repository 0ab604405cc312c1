"""The live push nodes, read from the Redis registry (``docs/seams.md`` §4), for placement.

``NodeDirectory.live()`` returns the nodes whose liveness score (``<ns>:nodes``) is in the future,
with the public URL each registered (``<ns>:node:<id>``), cached for ``refresh_s`` so that a burst
of logins costs one read. When Redis cannot be read, the last known list is kept (and, before any
read succeeded, the caller's configured URLs apply): placement is an optimisation, a client can
connect to any node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from chainpush.constants import RedisNames
from chainpush.logs import Throttle, client_text
from chainpush.push.dispatch import REDIS_ERRORS
from chainpush.push.placement import Node
from chainpush.push.redisio import open_client
from chainpush.resource import AsyncResource

logger = logging.getLogger(__name__)


class NodeDirectory(AsyncResource):
    def __init__(self, redis_url: str, *, names: RedisNames, refresh_s: float = 2.0,
                 timeout_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self._redis = open_client(redis_url, timeout_s=timeout_s)
        self.names = names
        self.refresh_s = refresh_s
        self._clock = clock
        self._nodes: list[Node] | None = None
        self._read_at = float("-inf")
        self._throttle = Throttle(10.0)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def live(self) -> list[Node] | None:
        """The live nodes (None: never read successfully yet)."""
        now = self._clock()
        if now - self._read_at < self.refresh_s:
            return self._nodes
        self._read_at = now
        try:
            ids = [str(n) for n in
                   await self._redis.zrangebyscore(self.names.nodes(), now, "+inf")]
            async with self._redis.pipeline(transaction=False) as pipe:
                for node_id in ids:
                    pipe.get(self.names.node(node_id))
                urls = await pipe.execute()
        except REDIS_ERRORS as exc:
            held = self._throttle.ready("directory")
            if held is not None:
                logger.warning("reading the live push nodes failed (%s: %s); placing users on "
                               "the nodes known before; %d similar lines held back",
                               type(exc).__name__, client_text(exc), held)
            return self._nodes
        self._nodes = [Node(i, str(u)) for i, u in zip(ids, urls, strict=True) if u]
        return self._nodes
