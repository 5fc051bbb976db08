"""`betterconv report`: the survey reproduced claim by claim, as one self-contained HTML page and a Markdown file."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..report import ReportSettings, build_report, check_output, write_report

DEFAULT_OUTPUT = Path("out/report")
DEFAULT_DATA = Path("../shared/data")  # the reference data folder beside the repository
DEFAULT_RESULTS = Path("benchmarks/results")
SETTINGS = ReportSettings()  # the full report; the tests set ReportSettings.quick()


def cmd_report(args: argparse.Namespace) -> None:
    output = Path(args.output)
    check_output(output)  # refuse a folder that is not a report before minutes of work
    data = Path(args.data) if args.data is not None else DEFAULT_DATA
    results = Path(args.results) if args.results is not None else DEFAULT_RESULTS
    report = build_report(data, results, SETTINGS, progress=not args.no_progress)
    files = write_report(report, output)
    if args.json:
        print(json.dumps({"output": str(output), "index": str(output / "index.html"),
                          "files": [str(f) for f in files], **report.summary()}, indent=2))
        return
    for claim in report.claims():
        print(f"{claim.number:5s} {claim.verdict.value:20s} {claim.title}")
    print(f"open {output / 'index.html'} (also {output / 'report.md'})")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `report` on the top-level sub-command parsers."""
    p = sub.add_parser("report", help="the survey reproduced claim by claim: index.html (self-contained) and "
                                      "report.md with figures")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT),
                   help=f"output folder, new or an earlier report's (default: {DEFAULT_OUTPUT})")
    p.add_argument("--data", default=None,
                   help=f"reference data folder for the live figures (default: {DEFAULT_DATA}; when absent they "
                        "are left out with a line saying so)")
    p.add_argument("--results", default=None,
                   help=f"folder of the benchmarks' result files (default: {DEFAULT_RESULTS})")
    p.add_argument("--json", action="store_true", help="print a JSON summary (sections, verdicts, files) alone")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_report)
