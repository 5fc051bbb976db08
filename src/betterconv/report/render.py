"""The report as Markdown (images beside it in figures/) and as one self-contained HTML page (images embedded as
base64 data URIs, inline CSS, no script)."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Any

from .records import DOES_NOT_HOLD, HOLDS, IN_DIRECTION, NOT_MEASURED, Claim, Section, Table

TITLE = "The survey, reproduced"
SURVEY = "\"Better Convolutional Networks: Foundations & Improvements\""
VERDICT_COLOURS = {HOLDS: "#2e7d32", IN_DIRECTION: "#9e7b00", DOES_NOT_HOLD: "#c62828", NOT_MEASURED: "#616161"}


@dataclass(frozen=True)
class Report:
    sections: tuple[Section, ...]
    built: str  # ISO date and time of the build
    versions: dict[str, str]
    data: str  # the reference data folder, or a sentence saying it is absent
    results: str
    settings: dict[str, Any] = field(default_factory=dict)

    def claims(self) -> list[Claim]:
        return [c for s in self.sections for c in s.claims]

    def summary(self) -> dict[str, Any]:
        return {"sections": [{"number": s.number, "title": s.title, "heading": s.heading, "claims": [
            {"number": c.number, "title": c.title, "reference": c.reference, "verdict": c.verdict.value,
             "reason": c.verdict.reason} for c in s.claims]} for s in self.sections]}

    def to_dict(self) -> dict[str, Any]:
        return {"report": "betterconv report", "survey": SURVEY.strip('"'), "built": self.built,
                "versions": self.versions, "data": self.data, "results": self.results, "settings": self.settings,
                "sections": [s.to_dict() for s in self.sections]}


def figure_path(name: str) -> str:
    return f"figures/{name}.png"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> list[str]:
    lines = [f"**{table.title}**", "", "| " + " | ".join(_md_cell(c.name) for c in table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.shown()]
    lines += ["", f"*Source: {table.source.describe()}*", ""]
    return lines


def intro_lines(report: Report) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items())
    return [f"Claim by claim, what the survey {SURVEY} says, what betterconv measured, how, and whether the claim "
            "holds here. Built " + report.built + f" ({versions}); reference data: {report.data}; result files: "
            f"{report.results}.",
            "Every number is computed while the report is built or read from the result file named beside it. A "
            "verdict is computed from the numbers by the rule stated with it: *holds*, *holds in direction* (the "
            "sign is right, the size is not), *does not hold here* (on this data and budget), or *not measured* "
            "(with the reason and the command that measures it)."]


def markdown(report: Report) -> str:
    lines = [f"# {TITLE}: betterconv report", ""]
    for text in intro_lines(report):
        lines += [text, ""]
    lines += ["| claim | verdict |", "|---|---|"]
    lines += [f"| {c.number} {_md_cell(c.title)} | {c.verdict.value} |" for c in report.claims()]
    lines.append("")
    for section in report.sections:
        lines += [f"## {section.heading}", ""]
        for claim in section.claims:
            lines += [f"### {claim.number} {claim.title}", "",
                      f"*Survey ({claim.reference}):* {claim.survey}", "",
                      f"**Verdict: {claim.verdict.value}.** {claim.verdict.reason}. *Rule:* {claim.verdict.rule}.",
                      ""]
            if claim.commands:
                lines += ["**Re-measure:** " + "; ".join(f"`{c}`" for c in claim.commands), ""]
            for table in claim.tables:
                lines += markdown_table(table)
            for figure in claim.figures:
                lines += [f"![{figure.title}]({figure_path(figure.name)})", "",
                          f"*{figure.title}. Source: {figure.source.describe()}*", ""]
            lines += [f"- {note}" for note in claim.notes]
            if claim.notes:
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.8em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .85em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.verdict { display: inline-block; color: #fff; padding: .1em .6em; border-radius: .8em; font-weight: 600; }
.source, .rule { color: #555; font-size: .85em; } code { background: #f4f4f4; padding: 0 .25em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .85em; } .survey { border-left: 4px solid #4c72b0; padding-left: .8em; }
"""


def _badge(value: str) -> str:
    return (f'<span class="verdict" style="background:{VERDICT_COLOURS[value]}">{html.escape(value)}</span>')


def html_table(table: Table) -> list[str]:
    e = html.escape
    out = [f"<p><strong>{e(table.title)}</strong></p>", "<table>",
           "<tr>" + "".join(f"<th>{e(c.name)}</th>" for c in table.columns) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in table.shown()]
    out += ["</table>", f'<p class="source">Source: {e(table.source.describe())}</p>']
    return out


def page(report: Report, images: dict[str, bytes]) -> str:
    """The whole HTML page; `images` maps each figure's name to its PNG bytes (embedded)."""
    e = html.escape
    body = [f"<h1>{e(TITLE)}: betterconv report</h1>"]
    body += [f"<p>{e(text)}</p>" for text in intro_lines(report)]
    body += ["<table>", "<tr><th>claim</th><th>verdict</th></tr>"]
    body += [f'<tr><td><a href="#claim-{c.number}">{e(c.number)} {e(c.title)}</a></td><td>{_badge(c.verdict.value)}'
             "</td></tr>" for c in report.claims()]
    body.append("</table>")
    for section in report.sections:
        body.append(f'<h2 id="section-{section.number}">{e(section.heading)}</h2>')
        for claim in section.claims:
            body += [f'<h3 id="claim-{claim.number}">{e(claim.number)} {e(claim.title)}</h3>',
                     f'<p class="survey"><em>Survey ({e(claim.reference)}):</em> {e(claim.survey)}</p>',
                     f"<p>{_badge(claim.verdict.value)} {e(claim.verdict.reason)}</p>",
                     f'<p class="rule">Rule: {e(claim.verdict.rule)}</p>']
            if claim.commands:
                body.append("<p>Re-measure: " + "; ".join(f"<code>{e(c)}</code>" for c in claim.commands) + "</p>")
            for table in claim.tables:
                body += html_table(table)
            for figure in claim.figures:
                data = base64.b64encode(images[figure.name]).decode("ascii")
                body += [f'<figure><img src="data:image/png;base64,{data}" alt="{e(figure.title)}">',
                         f"<figcaption>{e(figure.title)}. Source: {e(figure.source.describe())}</figcaption>",
                         "</figure>"]
            if claim.notes:
                body += ["<ul>", *(f"<li>{e(note)}</li>" for note in claim.notes), "</ul>"]
    head = [f"<title>{e(TITLE)}: betterconv report</title>", '<meta charset="utf-8">',
            '<link rel="icon" href="data:,">',  # no favicon request
            f"<style>{CSS}</style>"]
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n' + "\n".join(head) + "\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
