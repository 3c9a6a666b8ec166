"""Priorities: declared once in core/priority.py (the members, their order, default weights
and colours) and derived by settings, routing, the stats, the dashboard, the simulator and
the bench. tests/core/test_contracts.py adds a fourth priority in core alone and checks
that all of these follow."""

from __future__ import annotations

import pytest

from app.dashboard import page_contract
from bench import pipeline
from core.priority import COLORS, DEFAULT_WEIGHTS, Priority, names, parse_priority_map
from core.settings import Settings
from recorder import stats_aggregate
from simulator import plots
from simulator.generate import generate
from simulator.report import build_report
from simulator.samples import RunRecord, SendSample


def test_the_order_is_the_declaration_order() -> None:
    assert Priority.ordered() == tuple(Priority)
    assert [p.rank for p in Priority.ordered()] == list(range(len(Priority)))
    assert Priority.highest() is Priority.ordered()[0]
    assert Priority.lowest() is Priority.ordered()[-1]
    assert Priority.lowest().demoted() is Priority.lowest()
    for upper, lower in zip(Priority.ordered(), Priority.ordered()[1:], strict=False):
        assert upper.demoted() is lower


def test_every_priority_has_a_default_weight_and_a_colour() -> None:
    assert set(DEFAULT_WEIGHTS) == set(Priority) == set(COLORS)
    assert all(weight >= 1 for weight in DEFAULT_WEIGHTS.values())
    assert Settings(_env_file=None).priority_weights == dict(DEFAULT_WEIGHTS)  # type: ignore[call-arg]


def test_a_bad_name_is_refused_naming_every_priority() -> None:
    with pytest.raises(ValueError, match=", ".join(names())):
        parse_priority_map("urgent:1", what="weight")


def test_derived_priority_lists_match_core() -> None:
    ordered = names()
    assert list(stats_aggregate.PRIORITIES) == ordered
    assert list(pipeline.PRIORITIES) == ordered
    contract = page_contract()
    assert contract["priorities"] == ordered
    assert contract["colors"] == {p.value: COLORS[p] for p in Priority}
    assert {p: plots._color(p) for p in ordered} == contract["colors"]
    assert plots._color("not-a-priority") is None


def test_the_report_and_the_generator_speak_core_priorities() -> None:
    run = RunRecord("d", "", 1.0, "kafka", started_at=0.0, planned=3, finished_at=1.0)
    for seq, priority in enumerate(reversed(names())):
        run.sends.append(
            SendSample(
                seq=seq, team="alpha", routine="noop", priority=priority, scheduled=0, sent=0
            )
        )
    assert list(build_report(run)["by_priority"]) == names()
    dataset = generate("steady", seed=1, rate=20, duration=60)
    assert {entry["priority"] for entry in dataset["requests"]} == set(names())
