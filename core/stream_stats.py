"""The contract between the recorder, which computes stream statistics, and the API, which
serves them: the windows, and where in Redis the snapshot and the chart history live.

The snapshot (one JSON document) is written at most once a second by the recorder's
`StreamStats` observer; the chart history is one Redis list of JSON points per scope
(everything, or one team), newest last, trimmed to `HISTORY_POINTS`.
"""

from __future__ import annotations

from core.redis_keys import PREFIX

# Sliding windows over arrival time, by name, in seconds.
WINDOWS: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900}
DEFAULT_WINDOW = "5m"
# The trailing window the chart points are computed over (rates and wait percentiles).
CHART_WINDOW_SECONDS = 10
# One point a second for the longest window.
HISTORY_POINTS = 900
# The scope name of figures over every team (team names cannot contain "*").
ALL = "*"

SNAPSHOT_KEY = PREFIX + "stats:snapshot"
# Kept a while after the recorder stops, so the API can say how old the figures are.
SNAPSHOT_TTL_SECONDS = 3600


def history_key(scope: str) -> str:
    """The Redis list holding the chart points of one scope (ALL or a team)."""
    if scope == ALL:
        return PREFIX + "stats:history"
    return f"{PREFIX}stats:history:team:{scope}"
