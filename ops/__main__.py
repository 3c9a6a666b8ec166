"""`python -m ops up|down|status|migrate|skip-message`: run the stack natively, on loopback."""

from __future__ import annotations

import argparse
import sys

from confluent_kafka import KafkaException

from core.settings import settings_or_exit
from ops import poison
from ops.stack import Stack
from ops.supervisor import StartError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start what is not running and wait until it is ready")
    up.add_argument("components", nargs="*", help="only these (default: all)")
    sub.add_parser("down", help="stop everything that `up` started")
    stop = sub.add_parser("stop", help="stop the named components")
    stop.add_argument("components", nargs="+")
    restart = sub.add_parser("restart", help="stop and start the named components")
    restart.add_argument("components", nargs="+")
    sub.add_parser("status", help="each component, its PID, port and health")
    sub.add_parser("migrate", help="create topics and apply database migrations")
    sub.add_parser("demo", help="replay the bundled day against the running stack")
    skip = sub.add_parser(
        "skip-message",
        help="move a consumer past one message that stops it; a copy goes to the DLQ",
    )
    skip.add_argument("component", help=f"one of: {', '.join(poison.COMPONENTS)}")
    skip.add_argument("position", help="<topic>:<partition>:<offset>")
    skip.add_argument("--reason", default="", help="recorded in the dead letter's reason")
    skip.add_argument(
        "--skip-earlier",
        action="store_true",
        help="also dead-letter the messages before it that the group has not finished",
    )
    args = parser.parse_args(argv)

    settings = settings_or_exit()
    stack = Stack(settings)
    try:
        if args.command == "up":
            print("bringing the stack up:", flush=True)
            stack.up(args.components or None)
            print("ready.", flush=True)
        elif args.command == "down":
            stopped = stack.down()
            print("stopped." if stopped else "nothing was running.")
        elif args.command == "stop":
            stack.stop(args.components)
        elif args.command == "restart":
            stack.restart(args.components)
        elif args.command == "demo":
            from ops.demo import run_demo

            return run_demo(settings)
        elif args.command == "migrate":
            stack.migrate()
        elif args.command == "skip-message":
            poison.run(
                settings,
                stack,
                args.component,
                args.position,
                args.reason,
                skip_earlier=args.skip_earlier,
            )
        else:
            print(f"{'component':<10} {'state':<10} {'pid':>7} {'port':>6}")
            worst = 0
            for item in stack.status():
                pid = str(item.pid) if item.pid else "-"
                port = str(item.port) if item.port else "-"
                note = f"  {item.note}" if item.note else ""
                print(f"{item.name:<10} {item.state:<10} {pid:>7} {port:>6}{note}")
                worst = max(worst, 0 if item.state == "running" else 1)
            return worst
    except poison.Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (TimeoutError, RuntimeError, KafkaException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
