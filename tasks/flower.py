"""`python -m tasks.flower`: Flower on loopback, always behind basic authentication
(its /metrics too; /healthcheck stays open: it says only "OK").

The credentials come from FLOWER_BASIC_AUTH (user:password); `make up` generates them
into .run/secrets/ when the variable is not set. Flower refuses to start without them.
"""

from __future__ import annotations

import os
import sys

from core.celery_app import make_celery
from core.settings import settings_or_exit


def guard_metrics() -> None:
    """Flower serves /metrics without its basic auth (the handler lacks @authenticated,
    unlike every page and API route): put it behind the same credentials."""
    from flower.views.monitor import Metrics
    from tornado import web

    Metrics.get = web.authenticated(Metrics.get)


def main() -> int:
    settings = settings_or_exit()
    auth = settings.flower_basic_auth
    if auth is None or ":" not in auth.get_secret_value():
        print("FLOWER_BASIC_AUTH: set it to user:password; Flower never runs open", file=sys.stderr)
        return 2
    # Flower reads its own options from FLOWER_* variables; the password stays out of argv.
    os.environ["FLOWER_BASIC_AUTH"] = auth.get_secret_value()
    os.environ.pop("FLOWER_PORT", None)
    guard_metrics()
    app = make_celery(settings, "flower")
    app.start(
        [
            "flower",
            f"--address={settings.flower_address}",
            f"--port={settings.flower_port}",
            "--purge_offline_workers=60",
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
