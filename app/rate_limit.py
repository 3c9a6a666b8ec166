"""Per-team rate limits: a token bucket per team in Redis, shared by every API process.

A team may submit RATE_LIMIT tasks per second on average (TEAM_RATE_LIMITS overrides
per team), in bursts of up to RATE_BURST. Past that the API answers 429 with
Retry-After. If Redis cannot be reached the limiter lets requests through (a limiter
outage must not become an API outage) and says so in the log.
"""

from __future__ import annotations

import logging
import math
import threading

import redis

from app.errors import TooManyRequests
from core import redis_keys
from core.settings import Settings

log = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV rate/s, burst, cost. Returns {allowed 0|1, ms until enough tokens}.
_TAKE = """
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now_ms
tokens = math.min(burst, tokens + (now_ms - at) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now_ms)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
"""


class RateLimiter:
    """Each process draws tokens from the shared bucket in chunks and spends them locally,
    so most requests cost no Redis round trip while the limit stays global. A chunk is
    at most a tenth of a second's worth of the team's rate, so what processes hold back
    unused is small."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self._take = client.register_script(_TAKE)
        self._local: dict[str, int] = {}
        self._lock = threading.Lock()

    def rate(self, team: str) -> float:
        return self.settings.team_rate_limits.get(team, self.settings.rate_limit)

    def take(self, team: str, cost: int) -> None:
        """Spend `cost` of the team's tokens; raises TooManyRequests when it has too few."""
        with self._lock:
            if self._local.get(team, 0) >= cost:
                self._local[team] -= cost
                return
        rate = self.rate(team)
        chunk = max(1, min(int(rate / 10), 200))
        held = self._local.get(team, 0)
        wait_ms = 0
        try:
            for ask in dict.fromkeys((max(cost - held, chunk), cost - held)):
                allowed, wait_ms = self._take(
                    keys=[f"{redis_keys.PREFIX}rate:{team}"],
                    args=[rate, self.settings.rate_burst, ask],
                )
                if allowed:
                    with self._lock:
                        self._local[team] = self._local.get(team, 0) + int(ask) - cost
                    return
        except redis.RedisError as exc:
            log.warning("rate limiter unavailable, letting the request through: %s", exc)
            return
        retry_after = max(1, math.ceil(int(wait_ms) / 1000))
        raise TooManyRequests(
            f"team {team} is over its rate limit of {rate:g} tasks/s "
            f"(bursts up to {self.settings.rate_burst}); retry after {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )
