"""The live dashboard in a real headless browser (Debian's chromium, driven by Playwright):
the page asks for a key, refuses a bad one, draws its charts from the stats stream, a task
submitted through the API shows up, and scheduled, cancelled and expired tasks are counted.
A screenshot under load goes to reports/."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from core.status import OUTCOMES, Status
from tests.helpers import wait_for
from tests.tasks_db import submit_batch

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "reports" / "dashboard.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHARTS = ("chart-throughput", "chart-in-flight", "chart-scheduled", "chart-wait", "chart-teams")
WAIT_MS = 60_000  # every browser-side wait has this deadline

# Pixels of a series colour (not the white background, grey grid or black text) inside the
# chart's plot area: proof that lines were drawn, not just axes and a legend.
COLOURED_PIXELS_JS = """(id) => {
  const canvas = document.getElementById(id);
  const [x, y, w, h] = canvas.dataset.plot.split(",").map(Number);
  const ratio = canvas.width / canvas.clientWidth;
  const data = canvas.getContext("2d").getImageData(
    Math.round(x * ratio), Math.round(y * ratio), Math.round(w * ratio), Math.round(h * ratio)
  ).data;
  let coloured = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;
  }
  return coloured;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)  # assertions too (their own default is 5 s)
    yield page
    context.close()


class Load:
    """Submits batches of mixed tasks for alpha and bravo until stopped, so the charts
    have something to show; keeps the ids it was given."""

    # A bound, not a schedule: the test stops the load; a slow machine must not end it
    # before the screenshot (20 tasks every 0.4 s: about 100 s of load at most).
    def __init__(self, api: httpx.Client, limit: int = 5_000) -> None:
        self.api = api
        self.limit = limit
        self.ids: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="dashboard-load", daemon=True)

    def _items(self, count: int) -> list[dict[str, Any]]:
        kinds = itertools.cycle(
            [
                ("alpha", "high", "echo", {"n": 1}),
                ("bravo", "low", "sleep", {"ms": 60}),
                ("alpha", "medium", "sleep", {"ms": 30}),
                ("bravo", "high", "cpu", {"iterations": 20000}),
                ("alpha", "low", "sleep", {"ms": 40}),
                ("bravo", "medium", "echo", {"n": 2}),
            ]
        )
        return [
            {"team": t, "priority": p, "routine": r, "payload": payload}
            for (t, p, r, payload), _ in zip(kinds, range(count), strict=False)
        ]

    def _run(self) -> None:
        try:
            # Pacing between batches; the stop event ends the loop at once.
            while len(self.ids) < self.limit and not self.stop.wait(0.4):
                self.ids.extend(submit_batch(self.api, self._items(20)))
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def _log_in(page: Page, api_url: str, key: str) -> None:
    page.goto(f"{api_url}/dashboard")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#board")).to_be_hidden()
    page.fill("#key", key)
    page.click("#key-form button[type=submit]")


def test_the_dashboard_asks_for_a_key_draws_live_charts_and_shows_a_new_task(
    page: Page, api_url: str, admin_key: str, api: httpx.Client
) -> None:
    # A bad key is refused by the API, and the page asks again.
    _log_in(page, api_url, "tpk_nope_notavalidkey")
    expect(page.locator("#login-error")).to_contain_text("refused")
    expect(page.locator("#board")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('taskplatform.apiKey')") is None

    page.fill("#key", admin_key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#board")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("live")
    expect(page.locator("#scope")).to_have_text("all teams (admin)")
    assert admin_key not in page.url
    assert page.evaluate("sessionStorage.getItem('taskplatform.apiKey')") == admin_key

    with Load(api) as load:
        # Charts fill from the stream: points drawn, and coloured lines in the plot area.
        for chart in CHARTS:
            page.wait_for_function(
                "(id) => Number(document.getElementById(id).dataset.series) > 0",
                arg=chart,
            )
            assert int(page.get_attribute(f"#{chart}", "data-points") or 0) > 0, chart
            # A line grows as points arrive (a quiet series starts as a few pixels).
            page.wait_for_function(f"(id) => ({COLOURED_PIXELS_JS})(id) > 20", arg=chart)
        expect(page.locator("#team-table tbody tr[data-group=alpha]")).to_be_visible()
        expect(page.locator("#priority-table tbody tr[data-group=high]")).to_be_visible()

        # A task submitted now shows up in the latest tasks, and reaches its end there.
        created = api.post(
            "/api/v1/tasks",
            json={"team": "charlie", "routine": "sleep", "payload": {"ms": 200}},
        )
        assert created.status_code == 202
        task_id = created.json()["task_id"]
        row = page.locator(f'#recent-table tr[data-task-id="{task_id}"]')
        expect(row).to_be_visible()
        expect(row).to_contain_text("charlie")
        expect(row).to_have_attribute("data-status", "SUCCEEDED")

        # The screenshot is taken while the load is still running, once it has been
        # going for a while so that the charts show it.
        wait_for(lambda: len(load.ids) >= 200 or load.error, timeout=60, what="200 tasks of load")
        page.wait_for_function(
            "() => Number(document.querySelector('[data-metric=\"in flight\"] .value')"
            ".textContent) > 0"
        )
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        # Still submitting once the screenshot is done (not stopped at its limit, not
        # failed), so the screenshot shows the platform under load.
        assert load.thread.is_alive(), f"the load ended before the screenshot: {load.error}"
    assert load.error is None, load.error
    assert load.ids, "the load generator submitted tasks"
    assert SCREENSHOT.stat().st_size > 10_000


AT_LEAST_ONE_JS = "(selector) => Number(document.querySelector(selector)?.textContent) >= 1"


def _number(page: Page, selector: str) -> int:
    """The whole number a tile or cell shows (-1 while it shows none)."""
    text = (page.locator(selector).text_content() or "").strip()
    return int(text) if text.isdigit() else -1


def test_the_dashboard_counts_scheduled_cancelled_and_expired_tasks(
    page: Page, api_url: str, team_key: Callable[[str], str], api: httpx.Client
) -> None:
    _log_in(page, api_url, team_key("charlie"))
    expect(page.locator("#scope")).to_have_text("team charlie")
    # An outcome tile for every way a task can end, in core/status.py's order.
    outcomes = page.locator("#outcomes [data-outcome]")
    expect(outcomes.first).to_be_visible()
    assert outcomes.evaluate_all("tiles => tiles.map(t => t.dataset.outcome)") == [
        s.value for s in OUTCOMES
    ]

    item = {"team": "charlie", "routine": "noop"}
    waiting, cancelled = submit_batch(api, [{**item, "delay_seconds": 3600}] * 2)
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    (expired,) = submit_batch(api, [{**item, "expires_at": past}])
    try:
        for task_id in (waiting, cancelled):
            row = page.locator(f'#recent-table tr[data-task-id="{task_id}"]')
            expect(row).to_have_attribute("data-status", Status.SCHEDULED.value)
        page.wait_for_function(
            "() => Number(document.querySelector('[data-metric=\"scheduled\"] .value')"
            ".textContent) >= 2"
        )
        assert api.post(f"/api/v1/tasks/{cancelled}/cancel").status_code == 202
        for task_id, status in ((cancelled, Status.CANCELLED), (expired, Status.EXPIRED)):
            row = page.locator(f'#recent-table tr[data-task-id="{task_id}"]')
            expect(row).to_have_attribute("data-status", status.value)
            expect(row.locator("td.status")).to_have_text(status.label)
            # Counted in the window: its tile, and its column of the team's row.
            tile = f'#outcomes [data-outcome="{status.value}"] .value'
            page.wait_for_function(AT_LEAST_ONE_JS, arg=tile)
            column = f'#team-table tr[data-group="charlie"] td[data-column="{status.label}"]'
            assert _number(page, column) >= 1
        scheduled = '#team-table tr[data-group="charlie"] td[data-column="scheduled"]'
        assert _number(page, scheduled) >= 1
        page.wait_for_function(
            "(id) => Number(document.getElementById(id).dataset.series) > 0",
            arg="chart-scheduled",
        )
    finally:
        for task_id in (waiting, cancelled):  # nothing left to run an hour from now
            api.post(f"/api/v1/tasks/{task_id}/cancel")
    row = page.locator(f'#recent-table tr[data-task-id="{waiting}"]')
    expect(row).to_have_attribute("data-status", Status.CANCELLED.value)


def test_a_team_key_shows_that_team_only(
    page: Page, api_url: str, team_key: Callable[[str], str], api: httpx.Client
) -> None:
    _log_in(page, api_url, team_key("charlie"))
    expect(page.locator("#scope")).to_have_text("team charlie")
    created = api.post("/api/v1/tasks", json={"team": "charlie", "routine": "noop"})
    assert created.status_code == 202
    expect(
        page.locator(f'#recent-table tr[data-task-id="{created.json()["task_id"]}"]')
    ).to_be_visible()
    teams = page.locator("#team-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.group)"
    )
    assert teams == ["charlie"]
    shown = page.locator("#recent-table tbody tr td:nth-child(2)").all_text_contents()
    assert shown and set(shown) == {"charlie"}
    # Forgetting the key drops it from the tab and returns to the prompt.
    page.click("#forget")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('taskplatform.apiKey')") is None
