"""`/api/v1/stats` and `/api/v1/stats/stream`: what each caller may see (pure part and on
the running stack), that the numbers match a known submitted set, and the live stream."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from app import api, create_app
from app.auth import Principal, create_key
from app.errors import TooManyRequests
from app.sse import StreamSlots, sse_comment, sse_event
from app.stats_store import StatsStore, StatsUnavailable
from app.stats_view import recent_view, stats_view
from core.percentiles import SUMMARY_PERCENTS, summary
from core.settings import Settings
from core.status import OUTCOMES, Status
from recorder.stats_windows import RELATIVE_ACCURACY
from tests.app.sse_client import read_events
from tests.helpers import wait_for
from tests.instance import Instance
from tests.tasks_db import events, submit_batch, wait_terminal

TEAMS = ["alpha", "bravo", "charlie"]


# The per-caller view of a snapshot (pure).


def _summary(terminal: int) -> dict[str, Any]:
    return {"terminal": terminal, "in_flight": 0, "scheduled": 0}


def _scope(terminal: int, routines: dict[str, int]) -> dict[str, Any]:
    return {
        "overall": _summary(terminal),
        "by_priority": {"high": _summary(terminal)},
        "by_routine": {name: _summary(n) for name, n in routines.items()},
    }


def _snapshot() -> dict[str, Any]:
    scopes = {
        "*": _scope(7, {"echo": 4, "cpu": 3}),
        "alpha": _scope(4, {"echo": 4}),
        "bravo": _scope(3, {"cpu": 3}),
    }
    counts = {"overall": {"transitions": {}, "outcomes": {}}, "by_priority": {}, "by_routine": {}}
    return {
        "generated_at": 1_800_000_000.0,
        "relative_accuracy": 0.02,
        "teams": TEAMS,
        "windows": {"1m": {"seconds": 60, "covered_seconds": 60, "scopes": scopes}},
        "totals": {
            "since": 1_799_999_000.0,
            "scopes": dict.fromkeys(scopes, counts),
        },
        "recent": {
            "alpha": [{"task_id": "a1", "team": "alpha", "seen": 3.0}],
            "bravo": [{"task_id": "b1", "team": "bravo", "seen": 5.0}],
        },
    }


def test_an_admin_sees_every_team_and_the_figures_over_all_of_them() -> None:
    view = stats_view(_snapshot(), "1m", None, 1_800_000_001.5)
    assert view["team"] is None
    assert view["overall"]["terminal"] == 7
    assert set(view["by_team"]) == set(TEAMS)
    assert view["by_team"]["charlie"]["terminal"] == 0  # known team, no figures yet: zeros
    assert set(view["by_routine"]) == {"echo", "cpu"}
    assert view["age_seconds"] == 1.5
    assert [t["task_id"] for t in recent_view(_snapshot(), None)] == ["b1", "a1"]


def test_a_team_sees_figures_over_its_own_tasks_only() -> None:
    view = stats_view(_snapshot(), "1m", "bravo", 1_800_000_001.0)
    assert view["team"] == "bravo"
    assert view["overall"]["terminal"] == 3
    assert list(view["by_team"]) == ["bravo"]
    assert set(view["by_routine"]) == {"cpu"}
    assert list(view["totals"]["by_team"]) == ["bravo"]
    assert [t["team"] for t in recent_view(_snapshot(), "bravo")] == ["bravo"]
    charlie = stats_view(_snapshot(), "1m", "charlie", 1_800_000_001.0)
    assert charlie["overall"]["terminal"] == 0
    assert charlie["by_routine"] == {}
    assert recent_view(_snapshot(), "charlie") == []


def test_sse_framing_and_the_per_process_stream_cap() -> None:
    assert sse_event("status", {"a": 1}, event_id="x") == b'id: x\nevent: status\ndata: {"a":1}\n\n'
    assert sse_comment("keep-alive") == b": keep-alive\n\n"
    slots = StreamSlots(2)
    slots.take("alpha")
    slots.take("alpha")
    with pytest.raises(TooManyRequests) as refused:
        slots.take("alpha")
    assert refused.value.headers["Retry-After"]
    slots.give_back("alpha")
    slots.take("alpha")


def test_one_team_cannot_take_every_stream_slot() -> None:
    slots = StreamSlots(4, ["alpha", "bravo", "charlie"])
    slots.take("alpha")
    slots.take("alpha")  # two left, one for each team without a stream
    with pytest.raises(TooManyRequests):
        slots.take("alpha")
    with pytest.raises(TooManyRequests):
        slots.take("admin:k1")  # an admin key leaves them too
    slots.take("bravo")
    slots.take("charlie")  # each other team still got one
    with pytest.raises(TooManyRequests):
        slots.take("charlie")  # all four taken
    slots.give_back("alpha")
    slots.take("charlie")


class _MissingStore(StatsStore):
    def __init__(self) -> None:
        pass

    def snapshot(self) -> dict[str, Any]:
        raise StatsUnavailable("no statistics yet")


@pytest.fixture()
def offline_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    """The API in-process, with an admin caller and a store that has no snapshot."""
    principal = Principal(key_id="test", team=None, is_admin=True)
    monkeypatch.setattr(api, "authenticate", lambda store: principal)
    app = create_app(Settings())
    app.extensions["taskplatform"]._built["stats_store"] = _MissingStore()
    with app.test_client() as client:
        yield client


def test_no_snapshot_is_a_json_503_and_a_bad_window_a_400_naming_it(
    offline_client: FlaskClient,
) -> None:
    for path in ("/api/v1/stats", "/api/v1/stats/stream"):
        response = offline_client.get(path)
        assert response.status_code == 503
        assert response.json is not None
        assert response.json["error"]["code"] == "unavailable"
    bad = offline_client.get("/api/v1/stats?window=2m")
    assert bad.status_code == 400
    assert bad.json is not None and "window" in bad.json["error"]["message"]
    assert offline_client.get("/api/v1/stats?team=zulu").status_code == 400
    assert offline_client.get("/api/v1/stats?colour=red").status_code == 400
    assert offline_client.get("/api/v1/stats/stream?max_seconds=0").status_code == 400


# On the running stack.


def _client(api_url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=api_url, headers=headers, timeout=30)


def _stats(client: httpx.Client, **params: str) -> dict[str, Any]:
    response = client.get("/api/v1/stats", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _ms(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1000


# The known set runs on a platform instance of its own, for a team that exists only there:
# its figures are exactly what the test submitted, whatever other tests ran before or run
# meanwhile, and nobody else restarts its recorder (which holds the statistics).
OWN_TEAM = "stats-known-set"


@pytest.fixture(scope="module")
def own_team(stack: Settings) -> Iterator[Instance]:
    with Instance(stack, "stats", TEAMS=OWN_TEAM).running(
        ["api", "recorder", "bridge", "worker-1"]
    ) as instance:
        yield instance


def _fail_slice(client: httpx.Client, window: str = "1m") -> dict[str, Any]:
    found: dict[str, Any] = _stats(client, window=window)["by_routine"].get("fail", {})
    return found


def _fail_totals(client: httpx.Client) -> dict[str, Any]:
    found: dict[str, Any] = _stats(client)["totals"]["by_routine"].get("fail", {})
    return found


def _measure(
    client: httpx.Client, engine: Engine, successes: int, failures: int
) -> tuple[list[str], dict[str, str], dict[str, list[Any]], dict[str, Any]]:
    """Submit the set; wait until the totals and the 1-minute window hold exactly what
    Postgres recorded. Returns (ids, final statuses, timelines, the window's figures)."""

    def totals() -> dict[str, Any]:
        found = _fail_totals(client)
        return {
            kind: {status: n for status, n in found.get(kind, {}).items() if n}
            for kind in ("transitions", "outcomes")
        }

    wait_for(
        lambda: client.get("/api/v1/stats").status_code == 200,
        timeout=30,
        what="the instance's first statistics",
    )
    assert totals() == {"transitions": {}, "outcomes": {}}, "the statistics start empty"
    item = {"team": OWN_TEAM, "routine": "fail", "priority": "medium"}
    items = [{**item, "payload": {"times": 1}}] * successes
    items += [{**item, "payload": {"times": 10}}] * failures
    ids = submit_batch(client, items)
    final = wait_terminal(engine, ids)
    timelines = events(engine, ids)
    transitions = Counter(e.status for timeline in timelines.values() for e in timeline)
    expected = {"transitions": dict(transitions), "outcomes": dict(Counter(final.values()))}
    wait_for(lambda: totals() == expected, timeout=30, what="the totals to count our tasks")

    def exactly_ours() -> dict[str, Any] | None:
        found = _fail_slice(client)
        seen = {status: n for status, n in found.get("transitions", {}).items() if n}
        return found if seen == expected["transitions"] else None

    window = wait_for(exactly_ours, timeout=30, what="the 1-minute window to hold our tasks")
    return ids, final, timelines, window


@pytest.mark.stack
def test_stats_match_a_known_submitted_set(own_team: Instance) -> None:
    """6 `fail` tasks that fail once then succeed, 4 that fail all 4 attempts. The totals
    must count exactly what Postgres recorded, and the 1-minute window must give their
    counts, success rate, throughput and latencies."""
    successes, failures = 6, 4
    key = create_key(own_team.engine, team=OWN_TEAM, admin=False)[1]
    with own_team.client(key) as client:
        ids, final, timelines, window = _measure(client, own_team.engine, successes, failures)
    assert Counter(final.values()) == {"SUCCEEDED": successes, "FAILED": failures}
    started = sum(e.status == "STARTED" for timeline in timelines.values() for e in timeline)
    assert started == successes * 2 + failures * 4  # what `fail` promises
    assert window["outcomes"] == {
        **dict.fromkeys((s.value for s in OUTCOMES), 0),
        "SUCCEEDED": successes,
        "FAILED": failures,
    }
    assert window["terminal"] == successes + failures
    assert window["success_rate"] == round(successes / (successes + failures), 4)
    assert window["in_flight"] == window["scheduled"] == 0

    def at(task_id: str, status: str) -> list[datetime]:
        return sorted(e.at for e in timelines[task_id] if e.status == status)

    truth: dict[str, list[float]] = {"wait": [], "run": [], "end_to_end": []}
    for task_id in ids:
        accepted, starts = at(task_id, "ACCEPTED")[0], at(task_id, "STARTED")
        end = at(task_id, final[task_id])[0]
        truth["wait"].append(_ms(starts[0], accepted))
        truth["run"].append(_ms(end, starts[-1]))
        truth["end_to_end"].append(_ms(end, accepted))
    for metric, values in truth.items():
        found = window["latency_ms"][metric]
        assert found["count"] == len(ids), metric
        assert found["max"] == pytest.approx(max(values), abs=0.01), metric
        exact = summary(values)
        for name in SUMMARY_PERCENTS:
            expected = exact[name]
            assert expected is not None
            # Within the sketch's 2 % of the exact value, plus the rounding of the answer
            # to the microsecond (0.0005 ms) that matters for sub-millisecond run times.
            tolerance = RELATIVE_ACCURACY * expected + 0.0005
            assert found[name] == pytest.approx(expected, abs=tolerance), (metric, name)


@pytest.mark.stack
def test_stats_count_scheduled_cancelled_and_expired_tasks(own_team: Instance) -> None:
    """Three `noop` tasks scheduled an hour ahead count as scheduled, not in flight; each
    cancelled while it waits leaves that count as CANCELLED. A `sleep` task whose expires_at
    has passed ends EXPIRED, never started. An `echo` task scheduled 2 s ahead runs, and its
    wait counts from its run_at, its end-to-end time from its acceptance."""
    key = create_key(own_team.engine, team=OWN_TEAM, admin=False)[1]
    item = {"team": OWN_TEAM, "priority": "low"}
    with own_team.client(key) as client:
        wait_for(
            lambda: client.get("/api/v1/stats").status_code == 200,
            timeout=30,
            what="the instance's first statistics",
        )

        def routine(name: str) -> dict[str, Any]:
            found: dict[str, Any] = _stats(client, window="5m")["by_routine"].get(name, {})
            return found

        def figures(name: str, *keys: str) -> tuple[Any, ...]:
            found = routine(name)
            return tuple(found.get(k) for k in keys)

        def ended(name: str, count: int) -> Callable[[], dict[str, Any] | None]:
            """A wait condition: the routine's figures once `count` of its tasks ended."""
            return lambda: found if (found := routine(name)).get("terminal") == count else None

        later = submit_batch(client, [{**item, "routine": "noop", "delay_seconds": 3600}] * 3)
        soon = submit_batch(client, [{**item, "routine": "echo", "delay_seconds": 2}])
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        expired = submit_batch(client, [{**item, "routine": "sleep", "expires_at": past}])

        wait_for(
            lambda: figures("noop", "scheduled", "in_flight") == (3, 0),
            timeout=30,
            what="three noop tasks scheduled, none in flight",
        )
        assert client.post(f"/api/v1/tasks/{later[0]}/cancel").status_code == 202
        noop = wait_for(ended("noop", 1), timeout=30, what="the cancel in the window")
        assert (noop["scheduled"], noop["in_flight"]) == (2, 0)
        assert noop["outcomes"]["CANCELLED"] == 1

        final = wait_terminal(own_team.engine, soon + expired)
        assert final == {soon[0]: "SUCCEEDED", expired[0]: "EXPIRED"}
        task = client.get(f"/api/v1/tasks/{soon[0]}").json()
        timeline = events(own_team.engine, soon)[soon[0]]
        started = min(e.at for e in timeline if e.status == "STARTED")
        succeeded = max(e.at for e in timeline if e.status == "SUCCEEDED")
        accepted = min(e.at for e in timeline if e.status == "ACCEPTED")
        run_at = datetime.fromisoformat(task["run_at"])
        assert timeline[0].status == "ACCEPTED"
        assert "SCHEDULED" in [e.status for e in timeline]

        echo = wait_for(ended("echo", 1), timeout=30, what="the scheduled task in the window")
        assert (echo["scheduled"], echo["in_flight"]) == (0, 0)
        assert echo["latency_ms"]["wait"]["count"] == 1
        assert echo["latency_ms"]["wait"]["max"] == pytest.approx(
            _ms(started, max(accepted, run_at)), abs=0.01
        )
        assert echo["latency_ms"]["end_to_end"]["max"] == pytest.approx(
            _ms(succeeded, accepted), abs=0.01
        )
        assert _ms(succeeded, accepted) >= 2000  # its delay is in end_to_end, not in wait

        sleep = wait_for(ended("sleep", 1), timeout=30, what="the expired task in the window")
        assert sleep["outcomes"]["EXPIRED"] == 1
        assert sleep["latency_ms"]["wait"]["count"] == sleep["transitions"]["STARTED"] == 0

        for task_id in later[1:]:
            assert client.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 202
        noop = wait_for(ended("noop", 3), timeout=30, what="every scheduled task cancelled")
        assert (noop["scheduled"], noop["in_flight"]) == (0, 0)
        totals = _stats(client)["totals"]["by_routine"]
        assert {name: totals[name]["transitions"][Status.SCHEDULED.value] for name in totals} == {
            "noop": 3,
            "echo": 1,
            "sleep": 0,
            **({"fail": 0} if "fail" in totals else {}),  # the known set, if it ran first
        }
        assert {
            name: {status: n for status, n in totals[name]["outcomes"].items() if n}
            for name in ("noop", "echo", "sleep")
        } == {"noop": {"CANCELLED": 3}, "echo": {"SUCCEEDED": 1}, "sleep": {"EXPIRED": 1}}


@pytest.mark.stack
def test_a_team_key_gets_its_own_teams_figures_and_nothing_of_others(
    api_url: str, team_key: Callable[[str], str], admin_key: str
) -> None:
    with (
        _client(api_url, team_key("bravo")) as bravo,
        _client(api_url, admin_key) as admin,
    ):
        own = _stats(bravo, window="5m")
        assert own["team"] == "bravo"
        assert list(own["by_team"]) == ["bravo"]
        assert own["overall"] == own["by_team"]["bravo"]
        assert list(own["totals"]["by_team"]) == ["bravo"]

        # The same snapshot seen by an admin narrowing to bravo, and by an admin in full.
        def same_snapshot() -> tuple[dict[str, Any], ...] | None:
            views = (_stats(bravo), _stats(admin, team="bravo"), _stats(admin))
            return views if len({v["generated_at"] for v in views}) == 1 else None

        mine, narrowed, everything = wait_for(same_snapshot, what="three reads of one snapshot")
        for view in (mine, narrowed):
            view.pop("age_seconds")
        assert mine == narrowed
        assert set(everything["by_team"]) >= set(TEAMS)
        assert everything["by_team"]["bravo"] == mine["overall"]
        assert everything["overall"]["terminal"] >= mine["overall"]["terminal"]

        refused = bravo.get("/api/v1/stats", params={"team": "alpha"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        bad = bravo.get("/api/v1/stats", params={"window": "2m"})
        assert bad.status_code == 400
        assert "window" in bad.json()["error"]["message"]
    assert httpx.get(f"{api_url}/api/v1/stats").status_code == 401


@pytest.mark.stack
def test_the_stream_sends_history_then_live_figures_for_the_callers_team_and_ends(
    api_url: str, team_key: Callable[[str], str]
) -> None:
    with (
        _client(api_url, team_key("charlie")) as charlie,
        charlie.stream(
            "GET", "/api/v1/stats/stream", params={"window": "1m", "max_seconds": "3"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = list(read_events(response))  # ends: the stream closes after max_seconds
    names = [name for name, _ in received]
    assert names[0] == "hello"
    assert names[-1] == "end"
    assert received[-1][1]["reason"] == "lifetime"
    assert "stats" in names
    # The recorder writes a chart point for every team each tick, so history alone has some.
    assert "point" in names, names
    for name, data in received:
        if name == "point":
            assert set(data["throughput_by_team"]) == {"charlie"}
            assert set(data["in_flight"]) == {"total", "high", "medium", "low"}
        if name == "stats":
            assert data["stats"]["team"] == "charlie"
            assert list(data["stats"]["by_team"]) == ["charlie"]
            assert all(task["team"] == "charlie" for task in data["recent"])
    # The newest point has the scheduled count (older history may predate it).
    newest = [data for name, data in received if name == "point"][-1]
    assert set(newest["scheduled"]) == set(newest["in_flight"])
    points = [data["t"] for name, data in received if name == "point"]
    assert points == sorted(set(points)), "points arrive once each, oldest first"


@pytest.mark.stack
def test_the_stream_refuses_without_a_key_and_with_bad_parameters(
    api_url: str, team_key: Callable[[str], str]
) -> None:
    assert httpx.get(f"{api_url}/api/v1/stats/stream").status_code == 401
    with _client(api_url, team_key("charlie")) as charlie:
        for params, status in (
            ({"max_seconds": "0"}, 400),
            ({"window": "1h"}, 400),
            ({"team": "alpha"}, 403),
        ):
            response = charlie.get("/api/v1/stats/stream", params=params)
            assert response.status_code == status, params
            assert response.headers["content-type"] == "application/json"


def test_the_openapi_document_describes_the_stats_endpoints() -> None:
    from app.openapi import build_spec

    spec = build_spec(Settings())
    paths = spec["paths"]
    assert "/api/v1/stats" in paths
    # Generated from core.stats_shape: a figure added there is described.
    summary = spec["components"]["schemas"]["Summary"]
    assert {"in_flight", "scheduled"} <= set(summary["required"])
    assert (
        "text/event-stream" in paths["/api/v1/stats/stream"]["get"]["responses"]["200"]["content"]
    )
    assert "429" in paths["/api/v1/stats/stream"]["get"]["responses"]
