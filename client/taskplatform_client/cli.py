"""The command line: `taskplatform submit|get|wait|cancel|list|watch` (or
`python -m taskplatform_client`).

It reads TASKPLATFORM_URL (default http://127.0.0.1:8000) and TASKPLATFORM_API_KEY, or
--url and --key. `--json` prints JSON for scripts (one object per event for `watch`),
else a readable layout.

Exit codes: 0 done (a waited-for task SUCCEEDED); 1 a waited-for task ended otherwise
(FAILED, CANCELLED, EXPIRED, DEAD_LETTERED); 2 bad usage; 3 the platform could not be
reached or refused the request (any 4xx or 5xx, after retries); 4 timed out waiting;
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from taskplatform_client import _protocol as p
from taskplatform_client.cli_format import event_line, task_block, task_table
from taskplatform_client.client import Client
from taskplatform_client.errors import ApiError, TaskPlatformError, WaitTimeout
from taskplatform_client.models import Event, Status, TaskInfo

URL_VARIABLE = "TASKPLATFORM_URL"
KEY_VARIABLE = "TASKPLATFORM_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"

OK, FAILED, USAGE, REFUSED, TIMED_OUT, INTERRUPTED = 0, 1, 2, 3, 4, 130


class UsageError(Exception):
    """Bad usage found after parsing (no key, a payload that is not JSON): exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in `argv` (default: sys.argv); return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse's: 2 for bad usage, 0 after --help
        return exc.code if isinstance(exc.code, int) else USAGE
    try:
        with _client(args) as client:
            code: int = args.handler(client, args)
            return code
    except UsageError as exc:
        print(f"taskplatform: {exc}", file=sys.stderr)
        return USAGE
    except WaitTimeout as exc:
        _show(args, exc.task, task_block)
        print(f"taskplatform: {exc}", file=sys.stderr)
        return TIMED_OUT
    except TaskPlatformError as exc:
        if args.json and isinstance(exc, ApiError):
            print(json.dumps({**exc.body(), "status": exc.status}), file=sys.stderr)
        else:
            print(f"taskplatform: {exc}", file=sys.stderr)
        return REFUSED
    except KeyboardInterrupt:
        print("taskplatform: interrupted", file=sys.stderr)
        return INTERRUPTED


def _client(args: argparse.Namespace) -> Client:
    if not args.key:
        raise UsageError(f"no API key: set {KEY_VARIABLE} or pass --key")
    return Client(args.url, args.key, retry=p.Retry(attempts=args.retries + 1))


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _show(args: argparse.Namespace, info: TaskInfo, readable: Callable[[TaskInfo], str]) -> None:
    print(_dump(info.model_dump(mode="json")) if args.json else readable(info))


def _outcome(info: TaskInfo) -> int:
    return OK if info.status == Status.SUCCEEDED else FAILED


def _payload(text: str | None) -> dict[str, Any] | None:
    """--payload: JSON text, @file, or - (standard input)."""
    if text is None:
        return None
    source = "--payload"
    if text == "-":
        text, source = sys.stdin.read(), "standard input"
    elif text.startswith("@"):
        try:
            text, source = Path(text[1:]).read_text(), text[1:]
        except OSError as exc:
            raise UsageError(f"--payload: cannot read {text[1:]}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--payload: {source} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--payload: {source} must be a JSON object")
    return value


def _when(text: str | None, option: str) -> datetime | float | None:
    """Seconds from now, or an RFC 3339 time with an offset."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option}: {text!r} is neither seconds nor an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise UsageError(f"{option}: {text!r} has no offset (add Z or +00:00)")
    return moment


def _submit(client: Client, args: argparse.Namespace) -> int:
    task = client.submit(
        args.team,
        args.routine,
        _payload(args.payload),
        priority=args.priority,
        idempotency_key=args.idempotency_key,
        run_at=_when(args.run_at, "--run-at"),
        expires=_when(args.expires, "--expires"),
    )
    if args.wait is None:
        accepted = task.accepted
        assert accepted is not None
        if args.json:
            body = {**accepted.model_dump(mode="json"), "idempotency_key": task.idempotency_key}
            print(_dump(body))
        else:
            print(
                f"{accepted.status} {task.id} ({accepted.team}/{accepted.routine}, "
                f"{accepted.priority})"
            )
        return OK
    info = task.wait(None if math.isinf(args.wait) else args.wait)
    _show(args, info, task_block)
    return _outcome(info)


def _get(client: Client, args: argparse.Namespace) -> int:
    _show(args, client.get(args.task_id), task_block)
    return OK


def _wait(client: Client, args: argparse.Namespace) -> int:
    info = client.wait(args.task_id, args.timeout)
    _show(args, info, task_block)
    return _outcome(info)


def _cancel(client: Client, args: argparse.Namespace) -> int:
    answer = client.cancel(args.task_id, terminate=args.terminate)
    if args.json:
        print(_dump(answer.model_dump(mode="json")))
    else:
        print(f"{answer.status} {answer.task_id} (it was {answer.stage})")
    return OK


def _list(client: Client, args: argparse.Namespace) -> int:
    found = list(
        client.list(
            team=args.team,
            status=args.status,
            routine=args.routine,
            priority=args.priority,
            limit=args.limit,
            page_size=min(500, max(args.limit, 50)),
        )
    )
    if args.json:
        print(_dump([info.model_dump(mode="json") for info in found]))
    else:
        print(task_table(found))
    return OK


def _watch(client: Client, args: argparse.Namespace) -> int:
    """Each event as it comes; the exit code of the task's end, or 4 after --timeout."""
    events: queue.Queue[Event | BaseException | None] = queue.Queue()

    def follow() -> None:
        try:
            for event in client.events(args.task_id):
                events.put(event)
            events.put(None)
        except BaseException as exc:  # handed to the main thread, which raises it
            events.put(exc)

    threading.Thread(target=follow, daemon=True).start()
    previous: Event | None = None
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            item = events.get(timeout=left)
        except queue.Empty:
            info = client.get(args.task_id)
            raise WaitTimeout(info, args.timeout) from None
        if isinstance(item, BaseException):
            raise item
        if item is None:
            return _outcome(client.get(args.task_id))
        if args.json:
            print(_dump(item.model_dump(mode="json")), flush=True)
        else:
            print(event_line(item, previous), flush=True)
        previous = item


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("give a number of seconds above 0")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def _common(top: bool) -> argparse.ArgumentParser:
    """Options taken before or after the command (defaults set once, on the top parser)."""
    common = argparse.ArgumentParser(add_help=False)

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    common.add_argument(
        "--url",
        default=default(os.environ.get(URL_VARIABLE) or DEFAULT_URL),
        help=f"the API (default: ${URL_VARIABLE}, else {DEFAULT_URL})",
    )
    common.add_argument(
        "--key", default=default(os.environ.get(KEY_VARIABLE)), help=f"default: ${KEY_VARIABLE}"
    )
    common.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON, for scripts"
    )
    common.add_argument(
        "--retries",
        type=int,
        default=default(5),
        help="tries after a 429, 503 or lost connection (default 5)",
    )
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskplatform",
        description="Submit, follow and cancel tasks on the task platform.",
        epilog="exit codes: 0 succeeded, 1 failed, 2 bad usage, 3 unreachable or refused, "
        "4 timed out waiting",
        parents=[_common(top=True)],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    common = [_common(top=False)]

    submit = commands.add_parser("submit", parents=common, help="submit a task")
    submit.add_argument("--team", required=True)
    submit.add_argument("--routine", required=True)
    submit.add_argument("--priority", choices=["high", "medium", "low"])
    submit.add_argument("--payload", help="JSON object, @FILE, or - for standard input")
    submit.add_argument("--idempotency-key", help="default: one made for this submit")
    submit.add_argument("--run-at", help="seconds from now, or an RFC 3339 time")
    submit.add_argument("--expires", help="seconds it may wait to start, or an RFC 3339 time")
    submit.add_argument(
        "--wait",
        nargs="?",
        type=_seconds,
        const=math.inf,
        metavar="SECONDS",
        help="wait for the task to end (at most SECONDS)",
    )
    submit.set_defaults(handler=_submit)

    get = commands.add_parser("get", parents=common, help="show a task and its timeline")
    get.add_argument("task_id")
    get.set_defaults(handler=_get)

    wait = commands.add_parser("wait", parents=common, help="wait for a task to end")
    wait.add_argument("task_id")
    wait.add_argument("--timeout", type=_seconds, help="give up after SECONDS (exit 4)")
    wait.set_defaults(handler=_wait)

    cancel = commands.add_parser("cancel", parents=common, help="cancel a task")
    cancel.add_argument("task_id")
    cancel.add_argument("--terminate", action="store_true", help="stop it if it is running")
    cancel.set_defaults(handler=_cancel)

    listing = commands.add_parser("list", parents=common, help="list tasks, newest first")
    listing.add_argument("--team")
    listing.add_argument("--status", type=str.upper, choices=[s.value for s in Status])
    listing.add_argument("--routine")
    listing.add_argument("--priority", choices=["high", "medium", "low"])
    listing.add_argument("--limit", type=_count, default=20, help="at most this many (20)")
    listing.set_defaults(handler=_list)

    watch = commands.add_parser("watch", parents=common, help="follow a task's timeline live")
    watch.add_argument("task_id")
    watch.add_argument("--timeout", type=_seconds, help="give up after SECONDS (exit 4)")
    watch.set_defaults(handler=_watch)
    return parser
