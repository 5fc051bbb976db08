"""The survey reproduced claim by claim, as one page: `build_report` computes the analytic sections live and reads the
training and timing results from their files; `write_report` writes index.html (self-contained), report.md (with
figures/) and report.json. One function per section (foundations, fcn, deeplab, yolo, mobilenet, conclusion), each
returning a `Section` of `Claim` records: the survey's statement, tables and figures with the source of every
number, the command that re-measures it, and a verdict computed by a stated rule.

The layer sits between `weights` and `commands`: it may import `weights` and everything below it."""
from .build import SECTIONS, build_report, check_output, write_report
from .context import ReportSettings
from .records import (DOES_NOT_HOLD, HOLDS, IN_DIRECTION, NOT_MEASURED, VERDICTS, Claim, Column, Figure, Section,
                      Source, Table, Verdict)
from .render import Report
from .results import PRODUCERS, Result, read_result

__all__ = ["DOES_NOT_HOLD", "HOLDS", "IN_DIRECTION", "NOT_MEASURED", "PRODUCERS", "SECTIONS", "VERDICTS", "Claim",
           "Column", "Figure", "Report", "ReportSettings", "Result", "Section", "Source", "Table", "Verdict",
           "build_report", "check_output", "read_result", "write_report"]
