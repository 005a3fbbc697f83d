"""An asyncio Redis client for the event loop, for the small Redis steps that run before a route
(the failed-authentication look-up, the rate limit): awaited there, they cost no thread-pool hop.

An asyncio connection belongs to the loop that opened it. uvicorn serves from one loop, but a test
client may run each request on a new one, so there is one client per running loop (those of closed
loops are dropped).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

MAX_CONNECTIONS = 64  # beyond, a step waits for a free connection (up to the timeout), as threads do for the pool


class LoopRedis:
    def __init__(self, url: str, timeout_s: float):
        self.url = url
        self.timeout_s = timeout_s
        self._clients: dict[asyncio.AbstractEventLoop, tuple[aioredis.Redis, dict[str, object]]] = {}

    def _entry(self) -> tuple[aioredis.Redis, dict[str, object]]:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            for old in [k for k in self._clients if k.is_closed()]:
                del self._clients[old]
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=MAX_CONNECTIONS, timeout=self.timeout_s, socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s, health_check_interval=30)
            client = aioredis.Redis.from_pool(pool)
            entry = self._clients[loop] = (client, {})
        return entry

    def client(self) -> aioredis.Redis:
        return self._entry()[0]

    def script(self, source: str):
        """`source` registered on this loop's client (EVALSHA, loading it when Redis lacks it)."""
        client, scripts = self._entry()
        found = scripts.get(source)
        if found is None:
            found = scripts[source] = client.register_script(source)
        return found
