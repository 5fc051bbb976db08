"""`build_report`: every section in turn (progress on stderr); `write_report`: index.html, report.md, report.json and
figures/*.png into a folder, each file atomically, refusing a folder that holds something other than a report."""
from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch
import torchvision
from tqdm import tqdm

from ..errors import BetterConvError
from ..files import remove_stale_temporaries, write_atomic
from .conclusion import conclusion
from .context import Context, ReportSettings
from .deeplab import deeplab
from .fcn import fcn
from .foundations import foundations
from .mobilenet import mobilenet
from .records import Section
from .render import Report, figure_path, markdown, page
from .yolo import yolo

SECTIONS: dict[int, Callable[[Context], Section]] = {1: foundations, 2: fcn, 3: deeplab, 4: yolo, 5: mobilenet,
                                                     6: conclusion}
MARKER = "report.json"  # a folder with this file (written by this module) is a report folder
FILES = ("index.html", "report.md", MARKER)


def _version() -> str:
    try:
        return metadata.version("betterconv")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def build_report(data: str | Path, results: str | Path, settings: ReportSettings | None = None,
                 progress: bool = True) -> Report:
    """Build every section of `settings.sections`. `data`: the reference data folder (../shared/data); when it is
    absent the live figures that need it are replaced by a line saying so. `results`: the folder of the
    benchmarks' result files; a missing one is reported with the command that produces it."""
    settings = settings or ReportSettings()
    unknown = sorted(set(settings.sections) - set(SECTIONS))
    if unknown:
        raise BetterConvError(f"no report section {unknown[0]}; the sections are 1-{max(SECTIONS)}")
    data, results = Path(data), Path(results)
    present = data if data.is_dir() else None
    with tqdm(sorted(set(settings.sections)), desc="report", unit="section", disable=not progress) as bar:
        ctx = Context(settings, present, data, results, progress=bar.set_postfix_str)
        sections = tuple(SECTIONS[n](ctx) for n in bar)
    names = [f.name for s in sections for c in s.claims for f in c.figures]
    if len(names) != len(set(names)):
        raise BetterConvError(f"two figures share a name: {sorted(n for n in names if names.count(n) > 1)[0]}")
    return Report(sections, datetime.datetime.now().isoformat(timespec="seconds"),
                  {"betterconv": _version(), "torch": torch.__version__, "torchvision": torchvision.__version__},
                  str(data) if present else f"{data} (absent: the live figures that need it are left out)",
                  str(results), {k: v for k, v in asdict(settings).items()})


def check_output(output: Path) -> dict | None:
    """Refuse an output that is a file, or a non-empty folder without a report's `report.json`; returns the
    earlier report's record (None for a new folder)."""
    if output.exists() and not output.is_dir():
        raise BetterConvError(f"{output}: is a file, not a folder; choose another --output")
    if not output.is_dir() or not any(output.iterdir()):
        return None
    marker = output / MARKER
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("report") != "betterconv report":
        raise BetterConvError(f"{output}: holds files that are not a betterconv report; choose an empty or new "
                              "--output folder")
    return record


def write_report(report: Report, output: str | Path) -> list[Path]:
    """Write the report into `output` (figures first, index.html last); returns the files written. Figures an
    earlier report left there and this one does not have are removed."""
    output = Path(output)
    earlier = check_output(output)
    remove_stale_temporaries(output)
    remove_stale_temporaries(output / "figures")
    figures = {f.name: f.png for c in report.claims() for f in c.figures}
    written = []
    for name, png in figures.items():
        write_atomic(output / figure_path(name), png)
        written.append(output / figure_path(name))
    record = {**report.to_dict(), "files": [*FILES, *(figure_path(n) for n in figures)]}
    write_atomic(output / "report.md", markdown(report).encode())
    write_atomic(output / MARKER, (json.dumps(record, indent=2) + "\n").encode())
    write_atomic(output / "index.html", page(report, figures).encode())
    written += [output / name for name in FILES]
    for old in (earlier or {}).get("files", []):
        path = output / str(old)
        if str(old).startswith("figures/") and str(old) not in record["files"] and path.is_file() \
                and path.parent == output / "figures":
            path.unlink()
    return written
