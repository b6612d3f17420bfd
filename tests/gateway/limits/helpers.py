"""Store test helpers: the Redis URL of the run and a clock that moves only when told to."""

from __future__ import annotations

import os
import time

REDIS_URL = os.environ.get("REDIS_URL", "")
NO_REDIS = "REDIS_URL is not set (CI sets redis://127.0.0.1:6379/0)"


class FakeClock:
    """Epoch seconds that only move when a test says so. Starts near the real time, 1 s into a minute, so that
    Redis expiries (real time) agree with the windows."""

    def __init__(self) -> None:
        now = time.time()
        self.now = now - now % 60 + 61.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
