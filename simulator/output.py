"""Writing a run's results: DIR/report.json and the PNG plots beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simulator.plots import write_plots
from simulator.report import build_report
from simulator.samples import RunRecord

REPORT_FILE = "report.json"


def write_results(run: RunRecord, directory: Path) -> tuple[dict[str, Any], list[Path]]:
    """Create `directory` if needed, write report.json and the plots into it, and return
    the report and the paths written (report first). Raises OSError if it cannot write."""
    directory.mkdir(parents=True, exist_ok=True)
    report = build_report(run)
    plots = write_plots(run, report, directory)
    report["plots"] = [path.name for path in plots]
    path = directory / REPORT_FILE
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report, [path, *plots]
