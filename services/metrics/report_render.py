"""The period report as CSV and as a printable HTML page (the JSON is the model).

CSV: one file of sections; each section starts with a header row whose first cell
is `section`, its rows start with the section's name, and a blank row separates
sections. Text cells that a spreadsheet would run as a formula (=, +, -, @) are
quoted with a leading apostrophe (region names come from events).

HTML: one self-contained page (inline CSS and SVG, no script, nothing fetched), one
printed page per section (`break-before: page`), numbers for people: durations in
d / h / min / s, rates in %, changes of rates in percentage points.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any, Final
from zoneinfo import ZoneInfo

from services.metrics.report_schemas import (
    Breakdown,
    IndicatorChange,
    Report,
    ReportChart,
    ReportFormat,
    Unit,
)

NO_VALUE: Final = "\u2013"  # an en dash: no number
MINUS: Final = "\u2212"
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")

# What the region and category pages show of each member: (indicator, statistic).
HEADLINE: Final = (
    ("orders_completed", "value"),
    ("first_time_fix_rate", "value"),
    ("complaint_rate", "value"),
    ("sla_accept_rate", "value"),
    ("response_time_s", "p50"),
    ("csat", "value"),
)
LABELS: Final = {
    "response_time_s": "Response time",
    "arrival_time_s": "Arrival time",
    "diagnosis_time_s": "Diagnosis time",
    "resolution_time_s": "Resolution time",
    "complaint_resolution_s": "Complaint resolution",
    "first_time_fix_rate": "First-time fix",
    "resolution_rate": "Resolution",
    "rework_rate": "Rework",
    "complaint_rate": "Complaints",
    "cancellation_rate": "Cancellations",
    "price_deviation_mean": "Price deviation (mean)",
    "overrun_rate": "Price overrun",
    "requote_rate": "Re-quoted",
    "quoted_before_work_rate": "Quoted before work",
    "rating_mean": "Rating (mean)",
    "csat": "CSAT",
    "nps": "NPS",
    "ratings_count": "Ratings",
    "sla_accept_rate": "Accept SLA met",
    "sla_arrival_rate": "Arrival SLA met",
    "eta_error_s": "ETA error",
    "eta_kept_rate": "ETA kept",
    "orders_created": "Orders created",
    "orders_completed": "Orders completed",
    "assignments_declined": "Assignments declined",
    "assignments_expired": "Assignments expired",
}
CHART_UNITS: Final = {"response_time_s": Unit.SECONDS}


# --- numbers for people --------------------------------------------------------------


def duration(seconds: float, *, signed: bool = False) -> str:
    """1 d 03 h, 2 h 05 min, 4 min 05 s, 45 s (a sign with `signed` or below 0)."""
    sign = MINUS if seconds < 0 else ("+" if signed and seconds > 0 else "")
    total = round(abs(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days} d {hours:02d} h"
    elif hours:
        text = f"{hours} h {minutes:02d} min"
    elif minutes:
        text = f"{minutes} min {secs:02d} s"
    else:
        text = f"{secs} s"
    return sign + text


def _signed(text: str) -> str:
    return text.replace("-", MINUS)


def number(value: float | None, unit: Unit) -> str:
    """A figure as people read it."""
    if value is None:
        return NO_VALUE
    match unit:
        case Unit.SECONDS:
            return duration(value)
        case Unit.RATE | Unit.RATIO:
            return _signed(f"{value * 100:.1f} %")
        case Unit.SCORE:
            return f"{value:.2f}"
        case Unit.NPS:
            return _signed(f"{value:.1f}")
        case Unit.COUNT:
            return f"{value:,.0f}"


def change(value: float | None, unit: Unit) -> str:
    """A change as people read it: rates in percentage points."""
    if value is None:
        return NO_VALUE
    match unit:
        case Unit.SECONDS:
            return duration(value, signed=True)
        case Unit.RATE | Unit.RATIO:
            return _signed(f"{value * 100:+.1f} pp")
        case Unit.SCORE:
            return _signed(f"{value:+.2f}")
        case Unit.NPS:
            return _signed(f"{value:+.1f}")
        case Unit.COUNT:
            return _signed(f"{value:+,.0f}")


def p_value(value: float | None) -> str:
    if value is None:
        return NO_VALUE
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _when(instant: datetime | None, zone: str) -> str:
    if instant is None:
        return NO_VALUE
    return instant.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


# --- CSV -----------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def _change_rows(
    section: str, scope: str, member: str, lines: Iterable[IndicatorChange]
) -> list[list[Any]]:
    return [
        [
            section,
            scope,
            member,
            line.indicator,
            line.statistic,
            line.unit.value,
            line.current,
            line.previous,
            line.change,
            line.current_samples,
            line.previous_samples,
        ]
        for line in lines
    ]


def render_csv(report: Report) -> str:
    """The report as CSV sections (see the module docstring)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    p = report.period
    sections: list[tuple[list[str], list[list[Any]]]] = [
        (
            ["kind", "label", "start", "end", "time_zone", "previous"],
            [
                [
                    "period",
                    p.kind.value,
                    p.label,
                    p.start.isoformat(),
                    p.end.isoformat(),
                    p.time_zone,
                    report.previous_period.label,
                ]
            ],
        ),
    ]
    change_header = [
        *("dimension", "member", "indicator", "statistic", "unit"),
        *("current", "previous", "change", "current_samples", "previous_samples"),
    ]
    indicator_rows = _change_rows("indicators", "all", "", report.indicators)
    for breakdown in (*report.by_region, *report.by_category):
        indicator_rows += _change_rows(
            "indicators", breakdown.dimension, breakdown.member, breakdown.indicators
        )
    sections.append((change_header, indicator_rows))
    sections.append(
        (
            [
                *("technician_id", "rank", "composite", "fuzzy_grade"),
                *("final_completions", "insufficient_data", "previous_rank"),
                *("previous_composite", "composite_change"),
            ],
            [
                [
                    "technicians",
                    *(t.technician_id, t.rank, t.composite, t.fuzzy_grade),
                    *(t.final_completions, t.insufficient_data, t.previous_rank),
                    *(t.previous_composite, t.composite_change),
                ]
                for t in report.technicians
            ],
        )
    )
    sections.append(
        (
            [
                *("alert_id", "rule", "scope", "state", "value", "threshold"),
                *("samples", "raised_at", "cleared_at", "effect"),
            ],
            [
                [
                    "alerts",
                    *(str(a.alert_id), a.rule, a.scope, a.state, a.value),
                    *(a.threshold, a.samples, a.raised_at.isoformat()),
                    a.cleared_at.isoformat() if a.cleared_at else None,
                    None if a.effect is None else json.dumps(a.effect, default=str),
                ]
                for a in report.alerts
            ],
        )
    )
    sections.append(
        (
            [
                *("indicator", "chart", "scope", "week_start", "value", "centre"),
                *("lower", "upper", "samples", "reason"),
            ],
            [
                [
                    "signals",
                    *(s.indicator, s.chart, s.scope, s.week_start.isoformat()),
                    *(s.value, s.centre, s.lower, s.upper, s.samples, s.reason),
                ]
                for s in report.signals
            ],
        )
    )
    sections.append(
        (
            [
                *("indicator", "across", "members", "statistic"),
                *("degrees_of_freedom", "p_value", "small_expected_counts", "reason"),
            ],
            [
                [
                    "homogeneity",
                    *(h.indicator, h.across, len(h.rows), h.statistic),
                    *(h.degrees_of_freedom, h.p_value, h.small_expected_counts),
                    h.reason,
                ]
                for h in report.homogeneity
            ],
        )
    )
    for i, (header, rows) in enumerate(sections):
        if i:
            writer.writerow([])
        writer.writerow(["section", *header])
        writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()


# --- HTML ----------------------------------------------------------------------------

STYLE: Final = """
@page { size: A4; margin: 14mm 12mm; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; color: #1d2733;
  font-size: 10pt; margin: 0; padding: 16px; background: #fff; }
section { max-width: 190mm; margin: 0 auto 32px; }
@media print {
  body { padding: 0; }
  section { break-before: page; margin: 0; }
  section:first-of-type { break-before: auto; }
  tr, svg, .chart { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
}
h1 { font-size: 17pt; margin: 0 0 4px; }
h2 { font-size: 13pt; margin: 0 0 8px; border-bottom: 2px solid #2f6db5;
  padding-bottom: 3px; }
h3 { font-size: 10.5pt; margin: 10px 0 4px; }
p.meta { color: #56606b; margin: 0 0 10px; font-size: 8.5pt; }
table { border-collapse: collapse; width: 100%; font-size: 8.5pt; }
th, td { padding: 2.5px 5px; border-bottom: 1px solid #dde3ea; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.text, th.text { text-align: left; }
td:not(.text), th:not(.text), .nowrap { white-space: nowrap; }
thead th { background: #eef3f9; }
.up { color: #17763b; }
.down { color: #b3261e; }
.empty { color: #56606b; font-style: italic; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 6px 14px; }
.chart figcaption { font-weight: bold; font-size: 9pt; }
svg text { font-size: 8px; fill: #56606b; }
"""

# Which way is better, for colouring a change (None: neither).
BETTER_LOWER: Final = frozenset(
    {
        "response_time_s",
        "arrival_time_s",
        "diagnosis_time_s",
        "resolution_time_s",
        "complaint_resolution_s",
        "rework_rate",
        "complaint_rate",
        "cancellation_rate",
        "overrun_rate",
        "requote_rate",
        "assignments_declined",
        "assignments_expired",
    }
)
NEUTRAL: Final = frozenset(
    {"orders_created", "orders_completed", "ratings_count", "price_deviation_mean"}
)


def _label(indicator: str, statistic: str = "value") -> str:
    label = LABELS.get(indicator, indicator)
    return label if statistic == "value" else f"{label} ({statistic})"


def _direction(line: IndicatorChange) -> str:
    if not line.change or line.indicator in NEUTRAL or line.indicator == "eta_error_s":
        return ""
    better = (line.change < 0) == (line.indicator in BETTER_LOWER)
    return "up" if better else "down"


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, text_columns: int = 1
) -> str:
    """A table of already escaped cells; the first `text_columns` align left and
    may wrap, the numbers do not."""

    def cells(tag: str, row: Sequence[str]) -> str:
        return "".join(
            f'<{tag} class="text">{cell}</{tag}>'
            if i < text_columns
            else f"<{tag}>{cell}</{tag}>"
            for i, cell in enumerate(row)
        )

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return (
        f"<table><thead><tr>{cells('th', header)}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


def _change_cell(line: IndicatorChange) -> str:
    direction = _direction(line)
    text = escape(change(line.change, line.unit))
    return f'<span class="{direction}">{text}</span>' if direction else text


def _summary(report: Report) -> str:
    p, before = report.period, report.previous_period
    as_of = report.as_of
    rows = [
        [
            escape(_label(line.indicator, line.statistic)),
            escape(number(line.current, line.unit)),
            escape(number(line.previous, line.unit)),
            _change_cell(line),
            f"{line.current_samples:,}",
        ]
        for line in report.indicators
    ]
    return (
        f'<section id="summary"><h1>Quality report {escape(p.label)}</h1>'
        f'<p class="meta">{escape(p.kind.value.capitalize())} '
        f"{escape(_when(p.start, p.time_zone))} to {escape(_when(p.end, p.time_zone))} "
        f"({escape(p.time_zone)}), against {escape(before.label)}. "
        f"Data up to {escape(_when(as_of.last_recorded_at, p.time_zone))}; "
        f"policy {escape(as_of.policy_version)}.</p>"
        "<h2>Indicators</h2>"
        + _table(
            ["Indicator", escape(p.label), escape(before.label), "Change", "Samples"],
            rows,
        )
        + "</section>"
    )


def _breakdown(title: str, section_id: str, members: Sequence[Breakdown]) -> str:
    if not members:
        return (
            f'<section id="{section_id}"><h2>{escape(title)}</h2>'
            + _empty("No data in either period.")
            + "</section>"
        )
    header = ["Member", *(escape(_label(i, s)) for i, s in HEADLINE)]
    rows = []
    for member in members:
        by_key = {(m.indicator, m.statistic): m for m in member.indicators}
        row = [escape(member.member)]
        for key in HEADLINE:
            line = by_key[key]
            row.append(
                f"{escape(number(line.current, line.unit))}<br>{_change_cell(line)}"
            )
        rows.append(row)
    return (
        f'<section id="{section_id}"><h2>{escape(title)}</h2>'
        '<p class="meta">Each cell: the period\'s figure, and below it the change '
        "against the previous period.</p>" + _table(header, rows) + "</section>"
    )


def _technicians(report: Report) -> str:
    if not report.technicians:
        body = _empty("No technician has data in the period.")
    else:
        body = _table(
            [
                *("Technician", "Rank", "Composite", "Change", "Previous rank"),
                *("Grade", "Final completions"),
            ],
            [
                [
                    escape(t.technician_id),
                    NO_VALUE if t.rank is None else str(t.rank),
                    NO_VALUE if t.composite is None else f"{t.composite:.1f}",
                    NO_VALUE
                    if t.composite_change is None
                    else _signed(f"{t.composite_change:+.1f}"),
                    NO_VALUE if t.previous_rank is None else str(t.previous_rank),
                    escape(t.fuzzy_grade or NO_VALUE),
                    str(t.final_completions)
                    + (" (too few to rank)" if t.insufficient_data else ""),
                ]
                for t in report.technicians
            ],
        )
    return f'<section id="technicians"><h2>Technician ranking</h2>{body}</section>'


def _effect_text(effect: Mapping[str, Any] | None) -> str:
    """One action's measured effect: before -> after, the difference and p."""
    if effect is None:
        return "open"
    if effect.get("test") is None:
        return f"not tested ({effect.get('reason') or 'no samples'})"
    unit = Unit.RATE if effect["test"] == "two_proportion_z" else Unit.SECONDS
    text = (
        f"{effect['indicator']}: {number(effect['before'], unit)} \u2192 "
        f"{number(effect['after'], unit)} ({change(effect['difference'], unit)}, "
        f"p {p_value(effect['p_value'])}, n {effect['samples_before']}/"
        f"{effect['samples_after']})"
    )
    return text if effect.get("complete") else text + ", after window still open"


def _case_cell(case: Mapping[str, Any] | None) -> str:
    """The alert's case: its state, owner, resolution, each action's effect."""
    if case is None:
        return escape("not acknowledged")
    lines = [
        f"{case['case_state']}" + (f", owner {case['owner']}" if case["owner"] else "")
    ]
    lines += [f"{a['text']}: {_effect_text(a['effect'])}" for a in case["actions"]]
    if case["resolution"]:
        lines.append(f"resolution: {case['resolution']}")
    return "<br>".join(escape(line) for line in lines)


def _alerts(report: Report) -> str:
    zone = report.period.time_zone
    if not report.alerts:
        body = _empty("No alert was raised or cleared in the period.")
    else:
        body = _table(
            [
                *("Rule", "Scope", "Value", "Threshold", "Samples"),
                *("Raised", "Cleared", "Case and effect"),
            ],
            [
                [
                    escape(a.rule),
                    escape(a.scope),
                    f"{a.value:.4g}",
                    f"{a.threshold:.4g}",
                    str(a.samples),
                    escape(_when(a.raised_at, zone)),
                    escape(_when(a.cleared_at, zone)),
                    _case_cell(a.effect),
                ]
                for a in report.alerts
            ],
            text_columns=2,
        )
    truncated = (
        _empty("Only the first alerts are listed.") if report.alerts_truncated else ""
    )
    return (
        '<section id="alerts"><h2>Alerts opened and closed</h2>'
        f"{body}{truncated}</section>"
    )


def _svg_chart(chart: ReportChart) -> str:
    """The chart as an inline SVG: the weekly values joined, each week's centre
    (grey) and limits (dashed red) as short steps, signals as red dots."""
    unit = CHART_UNITS.get(chart.indicator, Unit.RATE)
    width, height, left, right, top, bottom = 330.0, 130.0, 52.0, 10.0, 8.0, 18.0
    points = chart.points
    numbers = [v for p in points for v in (p.value, p.lower, p.upper)]
    low, high = min(numbers), max(numbers)
    # A margin around the drawing; a flat chart gets one of its own size.
    pad = (high - low) * 0.08 or (0.05 if unit is Unit.RATE else abs(low) * 0.1 or 1)
    low, high = low - pad, high + pad
    if unit is Unit.RATE:  # a share never leaves [0, 1]: neither does its axis
        low, high = max(low, 0.0), min(high, 1.0)
    span = width - left - right
    step = span / max(1, len(points) - 1)
    half = min(step / 2, 14.0) if len(points) > 1 else 14.0

    def x(i: int) -> float:
        return left + i * step if len(points) > 1 else left + span / 2

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * (height - top - bottom)

    def steps(values: Sequence[float], style: str) -> str:
        return "".join(
            f'<line x1="{max(left, x(i) - half):.1f}" '
            f'x2="{min(left + span, x(i) + half):.1f}" y1="{y(v):.1f}" '
            f'y2="{y(v):.1f}" {style}/>'
            for i, v in enumerate(values)
        )

    coords = " ".join(f"{x(i):.1f},{y(p.value):.1f}" for i, p in enumerate(points))
    dots = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(p.value):.1f}" r="{3.2 if p.signal else 2.2}" '
        f'fill="{"#b3261e" if p.signal else "#2f6db5"}"/>'
        for i, p in enumerate(points)
    )
    limit = 'stroke="#b3261e" stroke-dasharray="3 2"'
    labels = (
        f'<text x="{left - 4}" y="{y(high) + 6:.1f}" text-anchor="end">'
        f"{escape(number(high, unit))}</text>"
        f'<text x="{left - 4}" y="{y(low):.1f}" text-anchor="end">'
        f"{escape(number(low, unit))}</text>"
        f'<text x="{left}" y="{height - 4}">{points[0].week_start.isoformat()}</text>'
        f'<text x="{width - right}" y="{height - 4}" text-anchor="end">'
        f"{points[-1].week_start.isoformat()}</text>"
    )
    return (
        f'<svg viewBox="0 0 {width:.0f} {height:.0f}" width="100%" role="img" '
        f'aria-label="{escape(_label(chart.indicator))} control chart">'
        f'<rect x="{left}" y="{top}" width="{span}" '
        f'height="{height - top - bottom}" fill="none" stroke="#dde3ea"/>'
        + steps([p.upper for p in points], limit)
        + steps([p.lower for p in points], limit)
        + steps([p.centre for p in points], 'stroke="#56606b"')
        + f'<polyline points="{coords}" fill="none" stroke="#2f6db5" '
        'stroke-width="1.2"/>' + dots + labels + "</svg>"
    )


def _stability(report: Report) -> str:
    figures = []
    for chart in report.control_charts:
        title = _label(chart.indicator) + (
            " (weekly median)" if chart.chart == "individuals" else " (weekly p-chart)"
        )
        drawing = (
            _svg_chart(chart)
            if chart.points
            else _empty("No point: a week needs data and the 12 weeks before it.")
        )
        figures.append(
            f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
            f"{drawing}</figure>"
        )
    signal_rows = []
    for s in report.signals:
        unit = CHART_UNITS.get(s.indicator, Unit.RATE)
        signal_rows.append(
            [
                escape(_label(s.indicator)),
                escape(s.scope),
                f'<span class="nowrap">{s.week_start.isoformat()}</span>',
                escape(s.reason),
                escape(number(s.value, unit)),
                escape(f"{number(s.lower, unit)} .. {number(s.upper, unit)}"),
            ]
        )
    signals = (
        _table(
            ["Indicator", "Scope", "Week", "Signal", "Value", "Limits"],
            signal_rows,
            text_columns=4,
        )
        if signal_rows
        else _empty("No signal in the period's weeks.")
    )
    tests = _table(
        ["Rate", "Across", "Members", "Chi-square", "df", "p-value", "Note"],
        [
            [
                escape(_label(h.indicator)),
                escape(h.across),
                str(len(h.rows)),
                NO_VALUE if h.statistic is None else f"{h.statistic:.3f}",
                NO_VALUE if h.degrees_of_freedom is None else str(h.degrees_of_freedom),
                p_value(h.p_value),
                escape(
                    h.reason
                    or ("expected counts below 5" if h.small_expected_counts else "")
                ),
            ]
            for h in report.homogeneity
        ],
        text_columns=2,
    )
    return (
        '<section id="stability"><h2>Stability</h2>'
        '<p class="meta">Weekly control charts (weeks starting in the period; limits '
        "from the 12 weeks before each): dashed red lines are the limits, grey the "
        "centre, red dots the signals.</p>"
        f'<div class="charts">{"".join(figures)}</div>'
        f"<h3>Signals (all orders and per region)</h3>{signals}"
        f"<h3>Homogeneity (Pearson chi-square)</h3>{tests}</section>"
    )


SECTIONS: Final[tuple[tuple[str, Callable[[Report], str]], ...]] = (
    ("summary", _summary),
    ("by_region", lambda r: _breakdown("By region", "by_region", r.by_region)),
    ("by_category", lambda r: _breakdown("By category", "by_category", r.by_category)),
    ("technicians", _technicians),
    ("alerts", _alerts),
    ("stability", _stability),
)


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page, one printed page per section."""
    body = "".join(render(report) for _, render in SECTIONS)
    title = escape(f"Quality report {report.period.label}")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


MEDIA_TYPES: Final = {
    ReportFormat.JSON: "application/json",
    ReportFormat.CSV: "text/csv; charset=utf-8",
    ReportFormat.HTML: "text/html; charset=utf-8",
}


def render(report: Report, format_: ReportFormat) -> str:
    """The report as JSON (the model), CSV or HTML."""
    match format_:
        case ReportFormat.JSON:
            return report.model_dump_json(indent=1)
        case ReportFormat.CSV:
            return render_csv(report)
        case ReportFormat.HTML:
            return render_html(report)
