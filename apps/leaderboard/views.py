"""Public leaderboard pages: parse the window, call a selector, render, cache.

Pages are rendered without the request (no user, no CSRF token, no session), so every
visitor gets the same bytes and a cached copy is safe to share."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from apps.gateway.access import Op
from apps.gateway.rest.public import public_read
from apps.leaderboard import selectors
from apps.leaderboard.caching import Built, cached_response
from apps.leaderboard.charts import interval_chart, sparkline, trend_chart
from apps.leaderboard.templatetags.leaderboard_format import ms, pct, usd

HTML = "text/html; charset=utf-8"


def _window(request: HttpRequest) -> str | None:
    key = request.GET.get("window", selectors.DEFAULT_WINDOW)
    return key if key in selectors.WINDOWS else None


def _render(template: str, status: int = 200, **context: object) -> Built:
    context.setdefault("windows", selectors.WINDOWS.values())
    return status, render_to_string(template, context).encode(), HTML


def _bad_window() -> HttpResponse:
    body = render_to_string("leaderboard/error.html", {
        "title": "Unknown window",
        "message": "Choose one of: " + ", ".join(selectors.WINDOWS) + ".",
        "windows": selectors.WINDOWS.values(),
    })
    return HttpResponse(body, status=400, content_type=HTML)


def _windowed(request: HttpRequest, key: tuple[str, ...], build: Callable[[str], Built]) -> HttpResponse:
    """The page for the request's window (400 for an unknown one), built by `build(window)` and
    cached under `key` and the window."""
    window = _window(request)
    if window is None:
        return _bad_window()
    return cached_response(request, key=(*key, window), build=lambda: build(window))


def _not_found(what: str) -> Built:
    return _render("leaderboard/error.html", status=404, title="Not on the board",
                   message=f"{what} is not on the public board in this window: it may have too few "
                           "attempts, belong to a project that has not opted in, or have been hidden.")


def _with_sparklines(board: selectors.Board) -> list[tuple[selectors.Entry, str]]:
    return [(entry, sparkline([point.rate for point in entry.trend],
                              label=f"Trend of {entry.name} {entry.version or entry.model}".strip()))
            for entry in board.entries]


# One row of the models or prompts table. Built here rather than in the template: with 50+
# rows, resolving a dozen variables and filters per row through the template engine cost more
# than the board's query (the 30-day prompts board: ~4 ms of template for 54 rows).
_ATTEMPT_ROW = (
    '<tr><td class="num" data-label="Rank">{rank}</td>'
    '<th scope="row" data-label="{label}"><a href="{href}?window={window}">{name}</a>{about}</th>'
    '<td class="num" data-label="Attempts">{attempts}</td>'
    '<td class="num" data-label="Success rate">{rate} <span class="ci">({low}–{high})</span></td>'
    '<td class="num" data-label="Cost per success">{cost}{partial}</td>'
    '<td class="num" data-label="p50 latency">{p50}</td>'
    '<td class="num" data-label="p95 latency">{p95}</td>'
    '<td data-label="Trend">{spark}</td></tr>\n'
)
_PARTIAL = mark_safe(' <span class="sub">partial</span>')  # noqa: S308  # a constant


def _attempt_rows(board: selectors.Board) -> SafeString:
    rows = []
    for entry, spark in _with_sparklines(board):
        if entry.kind == "prompts":
            href = reverse("leaderboard:prompt", args=[entry.project_id, entry.name])
            about = format_html(' <span class="version">{}</span> <span class="sub">by {}</span>', entry.version,
                                entry.project)
        else:
            href, about = reverse("leaderboard:model", args=[entry.name]), SafeString()
        rate = entry.rate
        estimate, low, high = (rate.estimate, rate.low, rate.high) if rate else (None, None, None)
        rows.append(format_html(
            _ATTEMPT_ROW, rank=entry.rank, label="Prompt" if entry.kind == "prompts" else "Model", href=href,
            window=board.window.key, name=entry.name, about=about, attempts=entry.attempts, rate=pct(estimate),
            low=pct(low), high=pct(high), cost=usd(entry.cost_per_success),
            partial=_PARTIAL if entry.cost_partial else "", p50=ms(entry.p50_ms), p95=ms(entry.p95_ms), spark=spark))
    return mark_safe("".join(rows))  # noqa: S308  # every row went through format_html


def _board_page(request: HttpRequest, kind: str) -> HttpResponse:
    def build(window: str) -> Built:
        board = selectors.board(kind=kind, window_key=window)
        if kind == "suites":
            suites: dict[str, list] = {}
            for entry, spark in _with_sparklines(board):
                suites.setdefault(entry.name, []).append((entry, spark))
            return _render("leaderboard/suites.html", board=board, suites=suites, page=kind)
        return _render(f"leaderboard/{kind}.html", board=board, rows=_attempt_rows(board), page=kind)

    return _windowed(request, ("page", kind), build)


@public_read(Op.GET_LEADERBOARD)
def models_page(request: HttpRequest) -> HttpResponse:
    return _board_page(request, "models")


@public_read(Op.GET_LEADERBOARD)
def prompts_page(request: HttpRequest) -> HttpResponse:
    return _board_page(request, "prompts")


@public_read(Op.GET_LEADERBOARD)
def suites_page(request: HttpRequest) -> HttpResponse:
    return _board_page(request, "suites")


@public_read(Op.GET_LEADERBOARD)
def model_page(request: HttpRequest, name: str) -> HttpResponse:
    def build(window: str) -> Built:
        board = selectors.model_detail(name=name, window_key=window)
        if not board.entries:
            return _not_found(f"The model “{name}”")
        entry = board.entries[0]
        hourly = board.window.width.total_seconds() < 86400
        chart = trend_chart([(point.start, point.interval) for point in entry.trend],
                            title=f"Success rate of {name}, {board.window.label}, with 95% intervals", hourly=hourly)
        return _render("leaderboard/model_detail.html", board=board, entry=entry, chart=chart, hourly=hourly,
                       page="models")

    return _windowed(request, ("model", name), build)


@public_read(Op.GET_LEADERBOARD)
def prompt_page(request: HttpRequest, project_id: int, name: str) -> HttpResponse:
    def build(window: str) -> Built:
        board, comparisons = selectors.prompt_detail(project_id=project_id, name=name, window_key=window)
        if not comparisons:
            return _not_found(f"The prompt “{name}”")
        chart = interval_chart([(f"{name} {c.entry.version}", rate) for c in comparisons
                                if (rate := c.entry.rate) is not None],
                               title=f"Success rate of each version of {name}, {board.window.label}",
                               axis_label="success rate (dot) with its 95% Wilson interval (bar)")
        return _render("leaderboard/prompt_detail.html", board=board, comparisons=comparisons, name=name,
                       project=comparisons[0].entry.project, chart=chart, page="prompts")

    return _windowed(request, ("prompt", str(project_id), name), build)


@public_read(Op.GET_LEADERBOARD)
def suite_page(request: HttpRequest, name: str) -> HttpResponse:
    def build(window: str) -> Built:
        board = selectors.suite_detail(name=name, window_key=window)
        if not board.entries:
            return _not_found(f"The suite “{name}”")
        chart = interval_chart([(entry.model, rate) for entry in board.entries if (rate := entry.rate) is not None],
                               title=f"Pass rate of each model on {name}, {board.window.label}",
                               axis_label="pass rate (dot) with its 95% Wilson interval (bar)")
        return _render("leaderboard/suite_detail.html", board=board, rows=_with_sparklines(board), name=name,
                       chart=chart, page="suites")

    return _windowed(request, ("suite", name), build)
