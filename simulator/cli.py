"""The command line: `python -m simulator run|generate|validate|schema`.

Exit codes: 0 done; 1 another failure (Kafka unreadable with --follow kafka, a report that
cannot be written); 2 bad usage or an invalid dataset (nothing sent); 3 the platform cannot
be reached or refuses the key (nothing sent); 130 interrupted (the partial report is written).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from simulator.dataset import MAX_OFFSET, SCHEMA_PATH, format_clock, load_dataset, schema_text
from simulator.errors import DatasetError, SimulatorError

API_KEY_VARIABLE = "TASKPLATFORM_API_KEY"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in `argv` (default: sys.argv); return the exit code."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except DatasetError as exc:
        _fail(str(exc))
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return exc.exit_code
    except SimulatorError as exc:
        _fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:  # before the replay's own handler is in place: nothing sent
        _fail("interrupted")
        return EXIT_INTERRUPTED


def _fail(message: str) -> None:
    print(f"simulator: {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator", description="Replay timed datasets against the platform."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="replay a dataset and write a report")
    run.add_argument("dataset", type=Path)
    run.add_argument("--speed", type=_positive, default=1.0, help="time scale (default 1)")
    run.add_argument("--api-url", help="default: http://127.0.0.1:$API_PORT")
    run.add_argument("--api-key", help=f"default: ${API_KEY_VARIABLE}")
    run.add_argument("--report-dir", type=Path, help="default: reports/<dataset>-<time>")
    run.add_argument("--kafka", help="Kafka bootstrap servers; default: $KAFKA_BOOTSTRAP")
    run.add_argument("--status-topic", help="default: $STATUS_TOPIC")
    run.add_argument(
        "--follow",
        choices=("auto", "kafka", "api", "none"),
        default="auto",
        help="how to follow tasks: the status topic, API polling, auto (topic, else API)",
    )
    run.add_argument(
        "--drain-timeout",
        type=_positive,
        default=120.0,
        help="after the last send, wait at most this many seconds for tasks to finish",
    )
    run.add_argument("--connections", type=int, default=100, help="HTTP connection pool size")
    run.add_argument("--no-progress", action="store_true", help="no live display")
    run.set_defaults(handler=_run)

    generate = commands.add_parser("generate", help="make a dataset from a load profile")
    generate.add_argument("--profile", required=True, choices=("steady", "morning-rush", "bursts"))
    generate.add_argument("--seed", type=int, required=True)
    generate.add_argument("--teams", default="alpha,bravo,charlie", help="name[:weight],...")
    generate.add_argument(
        "--routines",
        default="echo:4,noop:3,sleep:3,cpu:2,fail:0.3",
        help="name[:weight],...",
    )
    generate.add_argument("--rate", type=_positive, default=10.0, help="mean requests/s")
    generate.add_argument("--duration", default="06:00", help="MM:SS, at most 06:00")
    generate.add_argument("--name", help="the dataset's name (default: <profile>-<seed>)")
    for option, what in (
        ("--delayed", "a delay (a scheduled run)"),
        ("--expiring", "an expiry"),
        ("--cancelled", "a cancel_after"),
    ):
        generate.add_argument(
            option, type=float, default=0.0, help=f"share of requests (0-1) given {what}"
        )
    generate.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    generate.set_defaults(handler=_generate)

    validate = commands.add_parser("validate", help="check datasets without sending anything")
    validate.add_argument("datasets", type=Path, nargs="+")
    validate.add_argument(
        "--api-url",
        help="check payloads against the schemas this platform publishes (/openapi.json); "
        "default: this environment's settings (the built-in routines and ROUTINES)",
    )
    validate.set_defaults(handler=_validate)

    schema = commands.add_parser("schema", help="print (or --write) the dataset JSON Schema")
    schema.add_argument("--write", action="store_true", help=f"write {SCHEMA_PATH.name}")
    schema.set_defaults(handler=_schema)
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _run(args: argparse.Namespace) -> int:
    # Imported here: the replay machinery (aiohttp, Kafka, matplotlib) is not needed to
    # validate, generate or print the schema.
    from core.kafka import security_config
    from core.settings import ConfigError, load_settings
    from simulator import payloads
    from simulator.output import write_results
    from simulator.progress import RichProgress
    from simulator.replay import Replay, ReplayOptions
    from simulator.schedule import expand
    from simulator.summary import print_summary

    dataset = load_dataset(args.dataset)  # raises DatasetError before anything is sent
    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE)
    if not api_key:
        _fail(f"no API key: pass --api-key or set {API_KEY_VARIABLE}")
        return EXIT_USAGE
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(str(exc).replace("\n", " "))
        return EXIT_USAGE
    api_url = args.api_url or f"http://127.0.0.1:{settings.api_port}"
    # The payloads against the schemas the platform itself publishes, before anything is
    # sent (DatasetError naming requests[i].payload.<field>).
    schemas = payloads.fetch(api_url)
    if not schemas:
        print(
            f"simulator: warning: {api_url}/openapi.json publishes no payload schemas; "
            "payloads are left to the platform to check",
            file=sys.stderr,
        )
    payloads.check(dataset, schemas, source=str(args.dataset))
    options = ReplayOptions(
        api_url=api_url,
        api_key=api_key,
        speed=args.speed,
        follow=args.follow,
        kafka_bootstrap=args.kafka or settings.kafka_bootstrap,
        kafka_security=security_config(settings),
        status_topic=args.status_topic or settings.status_topic,
        drain_timeout=args.drain_timeout,
        connections=args.connections,
    )
    report_dir = args.report_dir or Path("reports") / (
        f"{dataset.name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    )
    console = Console()
    replay = Replay(
        name=dataset.name,
        description=dataset.description,
        firings=expand(dataset),
        options=options,
        display=None if args.no_progress else RichProgress(console),
    )
    console.print(
        f"replaying {dataset.name}: {dataset.size} requests over "
        f"{format_clock(max(r.offsets()[-1] for r in dataset.requests))} at speed "
        f"{args.speed:g}, against {options.api_url}",
        highlight=False,
    )
    run = asyncio.run(replay.run())
    try:
        report, paths = write_results(run, report_dir)
    except OSError as exc:
        _fail(f"cannot write the report in {report_dir}: {exc}")
        return 1
    print_summary(report, console)
    console.print(f"report: {paths[0]}  plots: {', '.join(str(p) for p in paths[1:])}")
    if report["not_finished"]:
        console.print(
            f"[yellow]warning:[/] {report['not_finished']} tasks had not finished when the "
            "replay stopped waiting",
            highlight=False,
        )
    return EXIT_INTERRUPTED if run.interrupted else 0


def _generate(args: argparse.Namespace) -> int:
    from simulator.dataset import parse_clock, parse_dataset
    from simulator.generate import Lifecycle, generate, parse_weights

    try:
        dataset = generate(
            args.profile,
            seed=args.seed,
            rate=args.rate,
            duration=parse_clock(args.duration),
            teams=parse_weights(args.teams),
            routines=parse_weights(args.routines),
            name=args.name,
            lifecycle=Lifecycle(
                delayed=args.delayed, expiring=args.expiring, cancelled=args.cancelled
            ),
        )
    except ValueError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    text = json.dumps(dataset, indent=1, ensure_ascii=False) + "\n"
    checked = parse_dataset(text, source=str(args.output))  # never write an invalid dataset
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}: {checked.size} requests in {len(checked.requests)} entries")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from core.settings import ConfigError, load_settings
    from simulator import payloads

    if args.api_url:
        schemas = payloads.fetch(args.api_url)  # PlatformUnreachable: exit 3
    else:
        try:
            schemas = payloads.from_settings(load_settings())
        except ConfigError as exc:
            _fail(str(exc).replace("\n", " "))
            return EXIT_USAGE
    failed = 0
    for path in args.datasets:
        try:
            dataset = load_dataset(path)
            payloads.check(dataset, schemas, source=str(path))
        except DatasetError as exc:
            failed += 1
            _fail(str(exc))
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            continue
        last = max(offset for r in dataset.requests for offset in r.offsets()[-1:])
        lifecycle = ", ".join(
            f"{n} {what}"
            for what, n in (
                ("delayed", sum(r.count for r in dataset.requests if r.delay is not None)),
                ("expiring", sum(r.count for r in dataset.requests if r.expires is not None)),
                ("cancelled", sum(r.count for r in dataset.requests if r.cancel_after is not None)),
            )
            if n
        )
        print(
            f"{path}: valid, {dataset.name!r}, {dataset.size} requests"
            f"{f' ({lifecycle})' if lifecycle else ''}, "
            f"last at {format_clock(last)} of {format_clock(MAX_OFFSET)}"
        )
    return EXIT_USAGE if failed else 0


def _schema(args: argparse.Namespace) -> int:
    text = schema_text()
    if args.write:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_PATH}")
    else:
        print(text, end="")
    return 0
