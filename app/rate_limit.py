"""Per-team rate limits: a token bucket per team in Redis, shared by every API process.

A team may submit RATE_LIMIT tasks per second on average (TEAM_RATE_LIMITS overrides
per team), in bursts of up to RATE_BURST. Past that the API answers 429 with
Retry-After. If Redis cannot be reached the limiter lets requests through (a limiter
outage must not become an API outage) and says so in the log.
"""

from __future__ import annotations

import logging
import math

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
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self._take = client.register_script(_TAKE)

    def rate(self, team: str) -> float:
        return self.settings.team_rate_limits.get(team, self.settings.rate_limit)

    def take(self, team: str, cost: int) -> None:
        """Spend `cost` of the team's tokens; raises TooManyRequests when it has too few."""
        rate = self.rate(team)
        burst = self.settings.rate_burst
        try:
            allowed, wait_ms = self._take(
                keys=[f"{redis_keys.PREFIX}rate:{team}"], args=[rate, burst, cost]
            )
        except redis.RedisError as exc:
            log.warning("rate limiter unavailable, letting the request through: %s", exc)
            return
        if not allowed:
            retry_after = max(1, math.ceil(int(wait_ms) / 1000))
            raise TooManyRequests(
                f"team {team} is over its rate limit of {rate:g} tasks/s "
                f"(bursts up to {self.settings.rate_burst}); retry after {retry_after}s",
                headers={"Retry-After": str(retry_after)},
            )
