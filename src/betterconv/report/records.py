"""The report's typed records: a section holds claims; a claim holds the survey's statement, the measured answer
(tables and figures, each with the source of its numbers), the command that re-measures it and a verdict computed
by a stated rule."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BetterConvError

HOLDS = "holds"
IN_DIRECTION = "holds in direction"
DOES_NOT_HOLD = "does not hold here"
NOT_MEASURED = "not measured"
VERDICTS = (HOLDS, IN_DIRECTION, DOES_NOT_HOLD, NOT_MEASURED)


@dataclass(frozen=True)
class Source:
    """Where numbers come from: a computation run while the report was built (`kind="computation"`), a result file
    (`kind="file"`, with the date, machine and command it records) or a result file that is missing or only a
    smoke test (`kind="missing"`, `command` = what produces it)."""
    kind: str
    what: str
    date: str | None = None
    machine: str | None = None
    command: str | None = None

    def describe(self) -> str:
        if self.kind == "computation":
            return f"computed while building this report: {self.what}"
        if self.kind == "missing":
            return f"{self.what}; produce it with `{self.command}`"
        parts = [self.what, f"date {self.date or 'not recorded'}", f"machine: {self.machine or 'not recorded'}"]
        if self.command:
            parts.append(f"command `{self.command}`")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "what": self.what, "date": self.date, "machine": self.machine,
                "command": self.command}


@dataclass(frozen=True)
class Column:
    """A table column: numbers are shown as `format(value / scale, fmt)`; the table keeps the raw values."""
    name: str
    fmt: str = ""
    scale: float = 1.0

    def show(self, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, float) and math.isinf(value):
            return "global"
        shown = value / self.scale if self.scale != 1.0 else value
        return format(shown, self.fmt) if self.fmt else str(shown)


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]
    source: Source

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise BetterConvError(f"table {self.title!r}: a row has {len(row)} cells for {len(self.columns)} "
                                      "columns")

    def shown(self) -> list[list[str]]:
        return [[c.show(v) for c, v in zip(self.columns, row)] for row in self.rows]

    def column(self, name: str) -> list[Any]:
        """The raw values of the column called `name`."""
        names = [c.name for c in self.columns]
        if name not in names:
            raise KeyError(f"table {self.title!r} has no column {name!r} (it has {names})")
        i = names.index(name)
        return [row[i] for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": [c.name for c in self.columns],
                "rows": [[_json_value(v) for v in row] for row in self.rows], "source": self.source.to_dict()}


@dataclass(frozen=True)
class Figure:
    name: str  # file stem under figures/
    title: str
    png: bytes
    source: Source


@dataclass(frozen=True)
class Verdict:
    value: str  # one of VERDICTS
    rule: str  # the stated rule the value comes from
    reason: str  # what the numbers gave under the rule

    def __post_init__(self) -> None:
        if self.value not in VERDICTS:
            raise BetterConvError(f"a verdict is one of {', '.join(VERDICTS)}, got {self.value!r}")


@dataclass(frozen=True)
class Claim:
    number: str  # "2.1"
    title: str
    reference: str  # the survey's (or the original paper's) section, figure or table
    survey: str  # what the survey says, paraphrased
    verdict: Verdict
    commands: tuple[str, ...] = ()  # what re-measures it
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()
    notes: tuple[str, ...] = ()  # computed remarks, and the lines that stand for figures left out

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "title": self.title, "reference": self.reference, "survey": self.survey,
                "verdict": self.verdict.value, "rule": self.verdict.rule, "reason": self.verdict.reason,
                "commands": list(self.commands), "tables": [t.to_dict() for t in self.tables],
                "figures": [{"name": f.name, "title": f.title, "source": f.source.to_dict()} for f in self.figures],
                "notes": list(self.notes)}


@dataclass(frozen=True)
class Section:
    number: int
    title: str
    claims: tuple[Claim, ...] = field(default_factory=tuple)

    @property
    def heading(self) -> str:
        return f"{self.number}. {self.title}"

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "title": self.title, "claims": [c.to_dict() for c in self.claims]}


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "global"
    return value


def rank_verdict(all_hold: bool, direction: bool, rule: str, reason: str) -> Verdict:
    """The usual three-way rule: `all_hold` -> holds, else `direction` -> holds in direction, else does not hold."""
    value = HOLDS if all_hold else IN_DIRECTION if direction else DOES_NOT_HOLD
    return Verdict(value, rule, reason)


def not_measured(rule: str, reason: str) -> Verdict:
    return Verdict(NOT_MEASURED, rule, reason)


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def join(items: Sequence[str]) -> str:
    return ", ".join(items)
