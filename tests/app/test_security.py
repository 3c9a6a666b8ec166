"""The API's own doors (issue "No one gets in where they don't belong", section 1 and 2):
each test is the attack itself, against the running API where it can be."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy
from flask import Flask
from sqlalchemy import Engine, insert

from app import auth, health
from app.auth import create_key
from app.queries import PAGE_MAX_BYTES
from core.logs import redact
from core.schema import api_keys
from core.settings import ConfigError, Settings, load_settings
from ops.services import flower_credentials
from testing.instance import Instance
from tests.helpers import wait_for
from tests.tasks_db import wait_terminal

pytestmark = pytest.mark.stack


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("admin:pa,ss", "comma"),  # Flower would also let a bare `ss` in
        ("admin:", "neither empty"),
        (":secret", "neither empty"),
        ("admin", "user:password"),
    ],
)
def test_a_flower_credential_flower_would_misread_is_refused(value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(flower_basic_auth=value)
    assert "FLOWER_BASIC_AUTH" in str(refused.value) and reason in str(refused.value)
    assert value not in str(refused.value)  # the secret itself is not echoed


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("redis://:s3cr/et@127.0.0.1:6379/0", "s3cr/et"),
        ("postgresql+psycopg://taskplatform:p%40ss/w0rd@127.0.0.1/db", "p%40ss/w0rd"),
        ("Authorization: Basic YWRtaW46c2VjcmV0", "YWRtaW46c2VjcmV0"),
        ("Authorization: Bearer tpk_abcd1234_zzzzzzzzzzzz", "zzzzzzzzzzzz"),
    ],
)
def test_logs_redact_url_passwords_basic_credentials_and_keys(line: str, secret: str) -> None:
    assert secret not in redact(line)


def test_the_database_refuses_a_team_key_without_a_team(engine: Engine) -> None:
    with pytest.raises(sqlalchemy.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            insert(api_keys).values(
                key_id=uuid.uuid4().hex[:8], key_hash=uuid.uuid4().hex, team=None, is_admin=False
            )
        )


def test_a_revoked_key_is_refused_by_every_api_process_soon_after(
    api_url: str, engine: Engine, stack: Settings
) -> None:
    key_id, key = create_key(engine, team="alpha", admin=False)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=10) as client:
        # Read by each gunicorn process (connections land on either): all cache it.
        for _ in range(4 * stack.api_workers):
            assert client.get("/api/v1/stats").status_code == 200
        assert _cli("revoke", key_id).exit_code == 0

        def refused_everywhere() -> bool:
            answers = [client.get("/api/v1/stats").status_code for _ in range(8)]
            return set(answers) == {401}

        wait_for(refused_everywhere, timeout=auth.CACHE_SECONDS + 10, what="401 from every process")


def test_keys_list_shows_each_key_and_its_last_use_but_never_the_key(
    api_url: str, engine: Engine
) -> None:
    key_id, key = create_key(engine, team="bravo", admin=False)
    with httpx.Client(base_url=api_url, timeout=10) as client:
        client.get("/api/v1/stats", headers={"Authorization": f"Bearer {key}"}).raise_for_status()
    result = _cli("list", "--json")
    assert result.exit_code == 0, result.output
    assert key not in result.output and key.rsplit("_", 1)[1] not in result.output
    mine = [line for line in result.output.splitlines() if f'"key_id":"{key_id}"' in line]
    assert len(mine) == 1 and '"team":"bravo"' in mine[0]
    assert '"last_used":null' not in mine[0] and '"revoked":null' in mine[0]


def test_a_flood_of_unknown_keys_is_throttled_per_address_while_known_keys_go_on(
    api_url: str, team_key: Callable[[str], str]
) -> None:
    good = {"Authorization": f"Bearer {team_key('alpha')}"}
    with httpx.Client(base_url=api_url, timeout=10) as client:
        assert client.get("/api/v1/stats", headers=good).status_code == 200
        answers = [
            client.get("/api/v1/stats", headers={"Authorization": f"Bearer tpk_{uuid.uuid4().hex}"})
            for _ in range(int(auth.FAILURE_BURST) * 4 + 20)
        ]
        codes = {answer.status_code for answer in answers}
        assert codes == {401, 429}, codes
        throttled = next(a for a in answers if a.status_code == 429)
        assert throttled.headers["Retry-After"] and "failed authentications" in throttled.text
        # A key this process knew is read again, not throttled with the flood.
        assert client.get("/api/v1/stats", headers=good).status_code == 200


def test_readyz_names_what_is_unreachable_but_never_the_error_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken:
        settings = load_settings()

        @property
        def submission(self) -> Any:
            raise RuntimeError("password=hunter2 at 10.0.0.7")

        @property
        def engine(self) -> Any:
            raise RuntimeError("FATAL: password authentication failed for hunter2")

    monkeypatch.setattr(health, "services", Broken)
    app = Flask(__name__)
    app.register_blueprint(health.blueprint)
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503
    assert "hunter2" not in answer.get_data(as_text=True)
    assert answer.get_json()["checks"] == {
        "kafka": "unreachable: RuntimeError",
        "postgres": "unreachable: RuntimeError",
    }


def test_metrics_ask_for_the_token_when_metrics_token_is_set(settings: Settings) -> None:
    token = uuid.uuid4().hex
    with Instance(settings, "metrics", METRICS_TOKEN=token).running(["api"]) as instance:
        url = f"{instance.api_url}/metrics"
        assert httpx.get(url, timeout=10).status_code == 401
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401 and token not in wrong.text
        right = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert right.status_code == 200 and "api_requests_total" in right.text


def _cli(*args: str) -> Any:
    from app import create_app

    app = create_app()
    try:
        return app.test_cli_runner().invoke(args=["keys", *args])
    finally:
        app.extensions["taskplatform"].close()


def test_a_team_key_scopes_to_its_team_and_a_teamless_one_to_none() -> None:
    teamless = auth.Principal(key_id="x", team=None, is_admin=False)
    with pytest.raises(auth.Forbidden):
        teamless.scope(None)
    assert auth.Principal(key_id="y", team="alpha", is_admin=False).scope(None) == "alpha"


def test_flowers_metrics_ask_for_its_basic_auth(stack: Settings) -> None:
    url = f"http://127.0.0.1:{stack.flower_port}"
    assert httpx.get(f"{url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{url}/metrics", auth=("admin", "wrong"), timeout=10).status_code == 401
    user, _, password = flower_credentials(stack, stack.run_dir).partition(":")
    answer = httpx.get(f"{url}/metrics", auth=(user, password), timeout=10)
    assert answer.status_code == 200 and "flower_" in answer.text
    assert httpx.get(f"{url}/healthcheck", timeout=10).text == "OK"  # liveness stays open


def test_a_page_of_large_results_is_cut_by_bytes_and_the_cursor_goes_on(
    api: httpx.Client, engine: Engine
) -> None:
    blob = "x" * 200_000  # echo returns it: each result is ~200 kB
    mine = []
    for _ in range(25):
        answer = api.post(
            "/api/v1/tasks", json={"team": "charlie", "routine": "echo", "payload": {"b": blob}}
        )
        mine.append(answer.json()["task_id"])
    wait_terminal(engine, mine)
    first = api.get("/api/v1/tasks", params={"team": "charlie", "limit": 50}).json()
    sizes = [len(orjson.dumps(task["result"])) for task in first["tasks"]]
    assert sum(sizes) - sizes[-1] <= PAGE_MAX_BYTES < sum(sizes) + 200_000 * 2
    assert len(first["tasks"]) < 25 and first["next_cursor"]
    seen, cursor = [t["task_id"] for t in first["tasks"]], first["next_cursor"]
    while cursor and not set(mine) <= set(seen):
        page = api.get(
            "/api/v1/tasks", params={"team": "charlie", "limit": 50, "cursor": cursor}
        ).json()
        seen += [t["task_id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
    assert set(mine) <= set(seen) and len(seen) == len(set(seen))


def test_a_revoked_keys_open_stream_ends_soon_after(api_url: str, engine: Engine) -> None:
    key_id, key = create_key(engine, team="bravo", admin=False)
    headers = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(base_url=api_url, headers=headers, timeout=30) as client,
        client.stream("GET", "/api/v1/stats/stream", params={"max_seconds": 120}) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        wait_for(lambda: next(lines).startswith("event: hello"), what="the stream's hello")
        assert _cli("revoke", key_id).exit_code == 0
        # The stream ends by itself (not at max_seconds): its last event says why.
        rest = list(lines)
    ends = [i for i, line in enumerate(rest) if line == "event: end"]
    assert ends and '"reason":"revoked"' in rest[ends[-1] + 1]
