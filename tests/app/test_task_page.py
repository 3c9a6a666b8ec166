"""The task page (/dashboard/tasks/<id>) in a real headless browser (Debian's chromium,
driven by Playwright), against the running stack: it follows a running task until it
ends, cancels another with its button, and the dashboard's latest tasks filter (in the
URL), link to it, and find a task by its id. The screenshot goes to docs/task-page.png.

The platform's teams are fixed by its settings, so these tests use charlie (as the other
dashboard tests do) and tell their own tasks apart by id, never by what else is there."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from core.status import Status
from tests.helpers import wait_for

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "task-page.png"
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
WAIT_MS = 60_000  # every browser-side wait has this deadline
TEAM = "charlie"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)  # assertions too (their own default is 5 s)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"the page's scripts raised: {errors}"


@pytest.fixture()
def team_api(api_url: str, team_key: Callable[[str], str]) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {team_key(TEAM)}"}, timeout=30
    ) as client:
        yield client


def _submit(api: httpx.Client, routine: str, payload: dict[str, object], **fields: object) -> str:
    created = api.post(
        "/api/v1/tasks", json={"team": TEAM, "routine": routine, "payload": payload, **fields}
    )
    assert created.status_code == 202, created.text
    return str(created.json()["task_id"])


def _status(api: httpx.Client, task_id: str) -> str | None:
    response = api.get(f"/api/v1/tasks/{task_id}")
    return response.json()["status"] if response.status_code == 200 else None


def _started(api: httpx.Client, task_id: str) -> None:
    wait_for(
        lambda: _status(api, task_id) == Status.STARTED.value,
        timeout=60,
        interval=0.1,
        what=f"task {task_id} to start",
    )


def _open(page: Page, api_url: str, path: str, key: str) -> None:
    """Open a dashboard page in a fresh tab: it asks for the key, then shows its data."""
    page.goto(f"{api_url}{path}")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#key", key)
    page.click("#key-form button[type=submit]")
    assert key not in page.url


def _timeline(page: Page) -> list[str]:
    return page.locator("#timeline tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.status)"
    )


def test_the_task_page_follows_a_running_task_until_it_succeeds(
    page: Page, api_url: str, team_key: Callable[[str], str], team_api: httpx.Client
) -> None:
    # Long enough to be running when the page has opened, on a slow machine too.
    task_id = _submit(team_api, "sleep", {"ms": 8000}, priority="high")
    _started(team_api, task_id)
    _open(page, api_url, f"/dashboard/tasks/{task_id}", team_key(TEAM))

    expect(page.locator("#task")).to_be_visible()
    expect(page.locator("#task-id")).to_have_text(task_id)
    expect(page.locator("#scope")).to_have_text(f"team {TEAM}")
    # Running when the page opened: it follows the task live and offers to cancel it.
    status = page.locator("#task-status")
    expect(status).to_have_attribute("data-status", Status.STARTED.value)
    expect(page.locator("#cancel")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("live")
    expect(page.locator("#payload")).to_contain_text('"ms": 8000')

    # It ends while the page is open: the page shows it, with its whole timeline.
    expect(status).to_have_attribute("data-status", Status.SUCCEEDED.value)
    expect(status).to_have_text(Status.SUCCEEDED.label)
    expect(page.locator("#connection")).to_have_text("ended")
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#result")).to_contain_text('"slept_ms": 8000')
    expect(page.locator("#error-box")).to_be_hidden()
    expect(page.locator('#timeline tbody tr[data-status="SUCCEEDED"]')).to_be_visible()
    steps = _timeline(page)
    recorded = [e["status"] for e in team_api.get(f"/api/v1/tasks/{task_id}").json()["timeline"]]
    assert steps == recorded
    for step in ("ACCEPTED", "QUEUED", "STARTED", "SUCCEEDED"):
        assert step in steps, steps
    assert steps.index("STARTED") < steps.index("SUCCEEDED")
    rows = page.locator("#timeline tbody tr")
    # Each step after the first says how long after the one before it came, and where.
    since = rows.locator("td.since").all_text_contents()
    assert since[0] == "\N{EN DASH}" and all(text.startswith("+") for text in since[1:]), since
    assert all(rows.locator("td.stage").all_text_contents())
    queued = page.locator('#timeline tbody tr[data-status="QUEUED"] td').nth(5)
    expect(queued).to_have_text("high")
    expect(page.locator('#facts [data-fact="queue"] dd')).to_have_text("high")

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000


def test_the_cancel_button_cancels_a_running_task(
    page: Page, api_url: str, team_key: Callable[[str], str], team_api: httpx.Client
) -> None:
    task_id = _submit(team_api, "sleep", {"ms": 60_000})
    try:
        _started(team_api, task_id)
        _open(page, api_url, f"/dashboard/tasks/{task_id}", team_key(TEAM))
        expect(page.locator("#cancel")).to_be_visible()
        page.check("#terminate")  # stop the sleep too: no worker slot held for a minute
        page.click("#cancel")

        expect(page.locator("#cancel-message")).to_contain_text("Cancelled while started")
        status = page.locator("#task-status")
        expect(status).to_have_attribute("data-status", Status.CANCELLED.value)
        expect(status).to_have_text(Status.CANCELLED.label)
        expect(page.locator("#cancel")).to_be_hidden()
        expect(page.locator("#connection")).to_have_text("ended")
        row = page.locator('#timeline tbody tr[data-status="CANCELLED"]')
        expect(row.locator("td.stage")).to_have_text("cancelled while started")
        expect(page.locator('#notes [data-note="cancelled"]')).to_contain_text("stopping its run")
    finally:
        team_api.post(f"/api/v1/tasks/{task_id}/cancel", json={"terminate": True})
    # Recorded as the page says, with the stage the cancel reached it at.
    task = team_api.get(f"/api/v1/tasks/{task_id}").json()
    assert task["status"] == Status.CANCELLED.value
    (cancelled,) = [e for e in task["timeline"] if e["status"] == Status.CANCELLED.value]
    assert cancelled["detail"]["stage"] == Status.STARTED.value
    assert cancelled["detail"]["terminate"] is True


def test_the_latest_tasks_filter_in_the_url_link_to_the_task_page_and_search_finds_it(
    page: Page, api_url: str, team_key: Callable[[str], str], team_api: httpx.Client
) -> None:
    low = _submit(team_api, "echo", {"n": 1}, priority="low")
    high = _submit(team_api, "echo", {"n": 2}, priority="high")
    wait_for(
        lambda: all(_status(team_api, t) == Status.SUCCEEDED.value for t in (low, high)),
        timeout=60,
        what="both echo tasks to succeed",
    )
    query = f"?team={TEAM}&status=SUCCEEDED&routine=echo&priority=low"
    _open(page, api_url, f"/dashboard{query}", team_key(TEAM))
    expect(page.locator("#board")).to_be_visible()
    # The controls show the URL's filters, and the table holds only what matches them.
    for name, value in (("team", TEAM), ("status", "SUCCEEDED"), ("priority", "low")):
        expect(page.locator(f"#filter-{name}")).to_have_value(value)
    expect(page.locator("#filter-routine")).to_have_value("echo")
    row = page.locator(f'#recent-table tr[data-task-id="{low}"]')
    expect(row).to_be_visible()
    expect(page.locator("#recent-caption")).to_contain_text("filtered")
    expect(page.locator(f'#recent-table tr[data-task-id="{high}"]')).to_have_count(0)
    priorities = page.locator("#recent-table tbody tr td:nth-child(4)").all_text_contents()
    assert priorities and set(priorities) == {"low"}

    # Changing a control changes the URL (the key never goes there).
    page.select_option("#filter-priority", "high")
    expect(page.locator(f'#recent-table tr[data-task-id="{high}"]')).to_be_visible()
    assert "priority=high" in page.url and "routine=echo" in page.url
    assert team_key(TEAM) not in page.url

    # The id links to the task's page (the key stays in the tab).
    page.locator(f'#recent-table tr[data-task-id="{high}"] a').click()
    page.wait_for_url(f"**/dashboard/tasks/{high}")
    expect(page.locator("#task-status")).to_have_attribute("data-status", "SUCCEEDED")

    # The search box: not an id, an id of no task, then the other task's id.
    page.fill("#search-id", "not-a-task")
    page.click("#search button[type=submit]")
    expect(page.locator("#search-error")).to_contain_text("is not a task id")
    missing = "00000000-0000-4000-8000-000000000000"
    page.fill("#search-id", missing)
    page.click("#search button[type=submit]")
    expect(page.locator("#search-error")).to_contain_text(f"no task {missing}")
    page.fill("#search-id", low)
    page.click("#search button[type=submit]")
    page.wait_for_url(f"**/dashboard/tasks/{low}")
    expect(page.locator("#task-status")).to_have_attribute("data-status", "SUCCEEDED")
    expect(page.locator("#result")).to_contain_text('"n": 1')

    # An id the key may not see, and a path that is no id, say so.
    page.goto(f"{api_url}/dashboard/tasks/{missing}")
    expect(page.locator("#problem")).to_contain_text(f"No task {missing}")
    page.goto(f"{api_url}/dashboard/tasks/nope")
    expect(page.locator("#problem")).to_contain_text("not a task id")
