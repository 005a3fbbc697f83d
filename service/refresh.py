"""`Refresher`: re-read a cache on a background thread, one read at a time, so a caller (the event
loop included: service/submission.py) answers from what is cached and never waits for Redis.
Used by the live-worker snapshot (service/heartbeats.py) and the tokenizers (service/tokens.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from redis.exceptions import RedisError

log = logging.getLogger("lantern.api")


class Refresher:
    def __init__(self, read: Callable[..., object], what: str):
        self._read = read
        self._what = what
        self._running = threading.Lock()

    def start(self, *args) -> None:
        """Run `read(*args)` on a new thread unless a read is already running."""
        if self._running.acquire(blocking=False):
            threading.Thread(target=self._run, args=args, name=f"lantern-{self._what}", daemon=True).start()

    def _run(self, *args) -> None:
        try:
            self._read(*args)
        except RedisError as e:  # what is cached stays; the next stale read starts another try
            log.warning("%s not refreshed: %s", self._what, e)
        finally:
            self._running.release()
