"""Settings: defaults that work, and bad values that name their variable."""

from __future__ import annotations

import pytest

from core.priority import Priority
from core.settings import ConfigError, RoutineType, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEAMS", "ROUTINES", "PRIORITY_WEIGHTS", "FLOOD_QUOTA", "API_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no .env


def test_defaults_make_a_working_platform() -> None:
    settings = load_settings()
    assert settings.teams == ["alpha", "bravo", "charlie"]
    assert settings.priority_weights == {Priority.HIGH: 6, Priority.MEDIUM: 3, Priority.LOW: 1}
    assert {"noop", "echo", "sleep", "cpu", "fail"} <= set(settings.routine_table)
    assert settings.request_topics == ["tasks.alpha", "tasks.bravo", "tasks.charlie"]
    assert settings.kafka_bootstrap == "127.0.0.1:9092"


def test_teams_and_routines_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAMS", "alpha, delta")
    monkeypatch.setenv(
        "ROUTINES",
        '{"report": {"function": "tasks.routines:sleep", "type": "batch", "priority": "low",'
        ' "stagger": 5}}',
    )
    settings = load_settings()
    assert settings.teams == ["alpha", "delta"]
    report = settings.routine_table["report"]
    assert report.type is RoutineType.BATCH
    assert report.highest_priority is Priority.MEDIUM
    assert settings.request_topic("delta") == "tasks.delta"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("TEAMS", "alpha,Bravo!", "'Bravo!'"),
        ("TEAMS", "alpha,alpha", "twice"),
        ("TEAMS", "status", "share a topic"),
        ("PRIORITY_WEIGHTS", "high:6,medium:3", "low"),
        ("PRIORITY_WEIGHTS", "high:6,medium:3,low:0", "at least 1"),
        ("PRIORITY_WEIGHTS", "urgent:6,medium:3,low:1", "'urgent'"),
        ("FLOOD_QUOTA", "high:lots", "'lots'"),
        ("ROUTINES", '{"x": {"function": "no-colon"}}', "module.path:function"),
        ("ROUTINES", '{"x": {"function": "a:b", "stagger": 3}}', "only batch"),
        ("ROUTINES", "{not json", "ROUTINES"),
        ("API_PORT", "99999", "65535"),
    ],
)
def test_bad_configuration_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message
    assert named in message


def test_public_view_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "admin:s3cret")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u:hunter2@db/x")
    view = load_settings().public_view()
    assert "s3cret" not in str(view)
    assert "hunter2" not in str(view)
