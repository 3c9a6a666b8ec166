"""Platform instances for tests (see testing.instance), and a batch-submit helper."""

from __future__ import annotations

from typing import Any

import httpx

from testing.instance import Instance

__all__ = ["Instance", "submit"]


def submit(client: httpx.Client, items: list[dict[str, Any]]) -> list[str]:
    response = client.post("/api/v1/tasks/batch", json={"tasks": items})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["rejected"] == 0, body
    return [r["task"]["task_id"] for r in body["results"]]
