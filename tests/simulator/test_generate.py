"""The generator: valid datasets, the same file for the same seed, the profiles' shapes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from simulator.cli import main
from simulator.dataset import load_dataset, parse_dataset
from simulator.generate import PROFILES, generate, parse_weights
from simulator.schedule import expand


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_makes_a_valid_dataset_of_the_asked_size(profile: str) -> None:
    data = generate(profile, seed=7, rate=12, duration=360)
    dataset = parse_dataset(json.dumps(data))
    assert dataset.size == 12 * 360
    assert {r.team for r in dataset.requests} == {"alpha", "bravo", "charlie"}
    assert max(f.offset for f in expand(dataset)) <= 360


def test_the_same_seed_gives_the_same_dataset_and_another_seed_does_not() -> None:
    assert generate("bursts", seed=3) == generate("bursts", seed=3)
    assert generate("bursts", seed=3) != generate("bursts", seed=4)


def per_minute(data: dict[str, object]) -> list[int]:
    counts: Counter[int] = Counter()
    for firing in expand(parse_dataset(json.dumps(data))):
        counts[int(firing.offset // 60)] += 1
    return [counts[minute] for minute in range(6)]


def test_profiles_have_their_shape() -> None:
    steady = per_minute(generate("steady", seed=1, rate=10))
    assert max(steady) - min(steady) <= 1
    rush = per_minute(generate("morning-rush", seed=1, rate=10))
    assert rush[1] > 2 * rush[0] and rush[1] > rush[5]
    seconds: Counter[int] = Counter()
    for firing in expand(parse_dataset(json.dumps(generate("bursts", seed=1, rate=10)))):
        seconds[int(firing.offset)] += 1
    assert max(seconds.values()) > 5 * 10  # a burst second carries many seconds' worth


def test_custom_teams_routines_and_duration() -> None:
    data = generate(
        "steady",
        seed=2,
        rate=5,
        duration=60,
        teams=parse_weights("ops:3,web"),
        routines=parse_weights("report,noop:0"),
        name="custom",
    )
    dataset = parse_dataset(json.dumps(data))
    assert dataset.name == "custom" and dataset.size == 300
    assert {r.routine for r in dataset.requests} == {"report"}
    teams = Counter(f.request.team for f in expand(dataset))
    assert teams["ops"] > teams["web"]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        generate("weekend", seed=1)
    with pytest.raises(ValueError, match="duration"):
        generate("steady", seed=1, duration=361)
    with pytest.raises(ValueError, match="weight"):
        parse_weights("alpha:lots")
    with pytest.raises(ValueError, match="nothing"):
        parse_weights("alpha:0")


def test_the_command_writes_a_valid_file_deterministically(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    for path in (first, second):
        argv = ["generate", "--profile", "morning-rush", "--seed", "9", "--rate", "4"]
        assert main([*argv, "--duration", "02:00", "-o", str(path)]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert load_dataset(first).size == 4 * 120
