"""Charts drawn on the server as inline SVG: no script, no third-party code, readable
without JavaScript. Every chart carries a text alternative (role="img" + <title>/<desc>);
the detail pages also print the chart's numbers in a table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from apps.leaderboard.stats import Interval


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def sparkline(rates: Sequence[float | None], *, label: str, width: int = 96, height: int = 24) -> SafeString:
    """A small line of success rate per bucket (0-100% bottom to top); gaps where a bucket had
    no attempts."""
    known = [rate for rate in rates if rate is not None]
    if not known:
        return format_html('<span class="spark-empty">{}</span>', "no trend")
    step = width / max(1, len(rates) - 1)
    pad = 2
    segments: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for index, rate in enumerate(rates):
        if rate is None:
            if current:
                segments.append(current)
            current = []
            continue
        current.append((index * step, pad + (1 - rate) * (height - 2 * pad)))
    if current:
        segments.append(current)
    paths = []
    for segment in segments:
        if len(segment) == 1:
            x, y = segment[0]
            paths.append(f'<circle cx="{_fmt(x)}" cy="{_fmt(y)}" r="1.5"/>')
        else:
            points = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in segment)
            paths.append(f'<polyline points="{points}"/>')
    description = (f"from {known[0]:.0%} to {known[-1]:.0%}, lowest {min(known):.0%}, highest {max(known):.0%}")
    return mark_safe(  # noqa: S308  # every interpolated value is a number or escaped
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}: {description}" focusable="false">'
        f'<line class="spark-base" x1="0" y1="{height - pad}" x2="{width}" y2="{height - pad}"/>'
        + "".join(paths) + "</svg>"
    )


def _x_label(moment: dt.datetime, hourly: bool) -> str:
    return moment.strftime("%H:%M") if hourly else moment.strftime("%b %d")


def trend_chart(points: Sequence[tuple[dt.datetime, Interval | None]], *, title: str, hourly: bool,
                width: int = 640, height: int = 260) -> SafeString:
    """Success rate per bucket with its 95% Wilson band; y axis 0-100%, x axis time (UTC)."""
    left, right, top, bottom = 48, 28, 12, 40  # room for the last date label
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(1, len(points) - 1)

    def y(rate: float) -> float:
        return top + (1 - rate) * plot_h

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-title chart-desc">',
             f'<title id="chart-title">{escape(title)}</title>']
    known = [(moment, interval) for moment, interval in points if interval is not None]
    if known:
        description = (f"{len(known)} of {len(points)} periods have attempts; success rate ranges from "
                       f"{min(i.estimate for _, i in known):.0%} to {max(i.estimate for _, i in known):.0%}.")
    else:
        description = "No attempts in this window."
    parts.append(f'<desc id="chart-desc">{escape(description)}</desc>')
    for tick in (0, 0.25, 0.5, 0.75, 1):  # horizontal grid and y labels
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{_fmt(y(tick))}" y2="{_fmt(y(tick))}"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{_fmt(y(tick) + 4)}" text-anchor="end">{tick:.0%}</text>')
    label_every = max(1, len(points) // 6)
    for index, (moment, _) in enumerate(points):
        if index % label_every == 0 or index == len(points) - 1:
            x = left + index * step
            parts.append(f'<text class="tick" x="{_fmt(x)}" y="{height - bottom + 16}" text-anchor="middle">'
                         f"{_x_label(moment, hourly)}</text>")
    parts.append(f'<text class="axis-label" x="{left + plot_w / 2:.0f}" y="{height - 4}" text-anchor="middle">'
                 f'{"hour" if hourly else "day"} (UTC)</text>')
    parts.append(f'<text class="axis-label" transform="rotate(-90)" x="{-(top + plot_h / 2):.0f}" y="12" '
                 'text-anchor="middle">success rate</text>')
    # Band and line per run of consecutive buckets that have data.
    runs: list[list[tuple[float, Interval]]] = [[]]
    for index, (_, interval) in enumerate(points):
        if interval is None:
            runs.append([])
        else:
            runs[-1].append((left + index * step, interval))
    for run in (run for run in runs if run):
        upper = " ".join(f"{_fmt(x)},{_fmt(y(i.high))}" for x, i in run)
        lower = " ".join(f"{_fmt(x)},{_fmt(y(i.low))}" for x, i in reversed(run))
        parts.append(f'<polygon class="band" points="{upper} {lower}"/>')
        if len(run) == 1:
            x, interval = run[0]
            parts.append(f'<circle class="line-dot" cx="{_fmt(x)}" cy="{_fmt(y(interval.estimate))}" r="3"/>')
        else:
            line = " ".join(f"{_fmt(x)},{_fmt(y(i.estimate))}" for x, i in run)
            parts.append(f'<polyline class="line" points="{line}"/>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>')
    parts.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308  # labels are escaped, the rest are numbers


def interval_chart(rows: Sequence[tuple[str, Interval]], *, title: str, axis_label: str,
                   width: int = 640) -> SafeString:
    """One row per item: its rate as a dot and its 95% interval as a bar (a forest plot),
    on a shared 0-100% axis."""
    left, right, top, row_h = 150, 16, 12, 28
    height = top + row_h * len(rows) + 44
    plot_w = width - left - right
    bottom_y = top + row_h * len(rows)

    def x(rate: float) -> float:
        return left + rate * plot_w

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-title chart-desc">',
             f'<title id="chart-title">{escape(title)}</title>',
             '<desc id="chart-desc">' + escape("; ".join(
                 f"{label}: {i.estimate:.1%} (95% interval {i.low:.1%} to {i.high:.1%})" for label, i in rows))
             + "</desc>"]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line class="grid" x1="{_fmt(x(tick))}" x2="{_fmt(x(tick))}" y1="{top}" y2="{bottom_y}"/>')
        parts.append(f'<text class="tick" x="{_fmt(x(tick))}" y="{bottom_y + 16}" text-anchor="middle">'
                     f"{tick:.0%}</text>")
    parts.append(f'<text class="axis-label" x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle">'
                 f"{escape(axis_label)}</text>")
    for index, (label, interval) in enumerate(rows):
        cy = top + row_h * index + row_h / 2
        shown = label if len(label) <= 22 else label[:21] + "…"
        parts.append(f'<text class="row-label" x="{left - 8}" y="{_fmt(cy + 4)}" text-anchor="end">'
                     f"{escape(shown)}</text>")
        parts.append(f'<line class="ci" x1="{_fmt(x(interval.low))}" x2="{_fmt(x(interval.high))}" '
                     f'y1="{_fmt(cy)}" y2="{_fmt(cy)}"/>')
        parts.append(f'<circle class="line-dot" cx="{_fmt(x(interval.estimate))}" cy="{_fmt(cy)}" r="4"/>')
    parts.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{bottom_y}" y2="{bottom_y}"/>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308  # labels are escaped, the rest are numbers
