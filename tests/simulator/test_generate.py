"""The generator: valid datasets, the same file for the same seed, the profiles' shapes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from simulator.cli import main
from simulator.dataset import load_dataset, parse_dataset
from simulator.generate import DELAYS, PROFILES, Lifecycle, generate, parse_weights
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


def test_a_lifecycle_gives_its_share_of_requests_a_delay_an_expiry_or_a_cancel() -> None:
    plain = generate("steady", seed=5, rate=10)
    data = generate("steady", seed=5, rate=10, lifecycle=Lifecycle(0.2, 0.1, 0.05))
    dataset = parse_dataset(json.dumps(data))
    assert dataset.size == 3600
    firings = expand(dataset)
    delayed = sum(1 for f in firings if f.request.delay is not None) / len(firings)
    expiring = sum(1 for f in firings if f.request.expires is not None) / len(firings)
    cancelled = sum(1 for f in firings if f.request.cancel_after is not None) / len(firings)
    assert 0.17 < delayed < 0.23 and 0.08 < expiring < 0.12, (delayed, expiring)
    assert 0.03 < cancelled < 0.07, cancelled
    assert {f.request.delay for f in firings} == {None, *DELAYS}
    assert "20% delayed, 10% expiring, 5% cancelled" in data["description"]
    # Without a lifecycle nothing is drawn for it: the dataset is as it always was.
    assert generate("steady", seed=5, rate=10, lifecycle=Lifecycle()) == plain
    assert not any(key in request for request in plain["requests"] for key in ("delay", "expires"))
    with pytest.raises(ValueError, match="delayed must be a share from 0 to 1"):
        Lifecycle(delayed=1.5)


def test_the_command_takes_lifecycle_shares(tmp_path: Path) -> None:
    path = tmp_path / "life.json"
    argv = ["generate", "--profile", "steady", "--seed", "1", "--rate", "5", "--duration"]
    argv += ["01:00", "--delayed", "0.5", "--cancelled", "0.2", "-o", str(path)]
    assert main(argv) == 0
    requests = load_dataset(path).requests
    assert any(r.delay for r in requests) and any(r.cancel_after for r in requests)
    assert not any(r.expires for r in requests)
    assert main([*argv[:-2], "--expiring", "2", "-o", str(path)]) == 2
