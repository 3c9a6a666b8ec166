"""`python -m tasks worker [celery worker options]`: run a Celery worker for every routine.

Builds the worker app from the settings, then hands the command line to Celery.
"""

from __future__ import annotations

import sys

from core.priority import Priority
from core.settings import ConfigError, settings_or_exit
from tasks.worker import build_worker_app


def main(argv: list[str]) -> int:
    settings = settings_or_exit()
    try:
        app = build_worker_app(settings)
    except ConfigError as exc:  # a routine that cannot be loaded
        print(exc, file=sys.stderr)
        return 2
    args = argv or ["worker"]
    if args[0] == "worker" and not any(a in ("-Q", "--queues") for a in args):
        # The order matters: workers take from high first (see core.celery_app).
        args = [*args, "--queues", ",".join(p.value for p in Priority.ordered())]
    app.start(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
