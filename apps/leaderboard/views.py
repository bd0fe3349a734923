"""Public leaderboard pages: parse the window, call a selector, render, cache.

Pages are rendered without the request (no user, no CSRF token, no session), so every
visitor gets the same bytes and a cached copy is safe to share."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from apps.gateway.access import Op
from apps.gateway.rest.public import public_read
from apps.leaderboard import selectors
from apps.leaderboard.caching import Built, cached_response
from apps.leaderboard.charts import interval_chart, sparkline, trend_chart

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


def _not_found(what: str) -> Built:
    return _render("leaderboard/error.html", status=404, title="Not on the board",
                   message=f"{what} is not on the public board in this window: it may have too few "
                           "attempts, belong to a project that has not opted in, or have been hidden.")


def _with_sparklines(board: selectors.Board) -> list[tuple[selectors.Entry, str]]:
    return [(entry, sparkline([point.rate for point in entry.trend],
                              label=f"Trend of {entry.name} {entry.version or entry.model}".strip()))
            for entry in board.entries]


def _board_page(request: HttpRequest, kind: str) -> HttpResponse:
    window = _window(request)
    if window is None:
        return _bad_window()

    def build() -> Built:
        board = selectors.board(kind=kind, window_key=window)
        rows = _with_sparklines(board)
        if kind == "suites":
            suites: dict[str, list] = {}
            for entry, spark in rows:
                suites.setdefault(entry.name, []).append((entry, spark))
            return _render("leaderboard/suites.html", board=board, suites=suites, page=kind)
        return _render(f"leaderboard/{kind}.html", board=board, rows=rows, page=kind)

    return cached_response(request, key=("page", kind, window), build=build)


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
    window = _window(request)
    if window is None:
        return _bad_window()

    def build() -> Built:
        board = selectors.model_detail(name=name, window_key=window)
        if not board.entries:
            return _not_found(f"The model “{name}”")
        entry = board.entries[0]
        hourly = board.window.width.total_seconds() < 86400
        chart = trend_chart([(point.start, point.interval) for point in entry.trend],
                            title=f"Success rate of {name}, {board.window.label}, with 95% intervals", hourly=hourly)
        return _render("leaderboard/model_detail.html", board=board, entry=entry, chart=chart, hourly=hourly,
                       page="models")

    return cached_response(request, key=("model", name, window), build=build)


@public_read(Op.GET_LEADERBOARD)
def prompt_page(request: HttpRequest, project_id: int, name: str) -> HttpResponse:
    window = _window(request)
    if window is None:
        return _bad_window()

    def build() -> Built:
        board, comparisons = selectors.prompt_detail(project_id=project_id, name=name, window_key=window)
        if not comparisons:
            return _not_found(f"The prompt “{name}”")
        chart = interval_chart([(f"{name} {c.entry.version}", c.entry.rate) for c in comparisons],
                               title=f"Success rate of each version of {name}, {board.window.label}",
                               axis_label="success rate (dot) with its 95% Wilson interval (bar)")
        return _render("leaderboard/prompt_detail.html", board=board, comparisons=comparisons, name=name,
                       project=comparisons[0].entry.project, chart=chart, page="prompts")

    return cached_response(request, key=("prompt", str(project_id), name, window), build=build)


@public_read(Op.GET_LEADERBOARD)
def suite_page(request: HttpRequest, name: str) -> HttpResponse:
    window = _window(request)
    if window is None:
        return _bad_window()

    def build() -> Built:
        board = selectors.suite_detail(name=name, window_key=window)
        if not board.entries:
            return _not_found(f"The suite “{name}”")
        chart = interval_chart([(entry.model, entry.rate) for entry in board.entries],
                               title=f"Pass rate of each model on {name}, {board.window.label}",
                               axis_label="pass rate (dot) with its 95% Wilson interval (bar)")
        return _render("leaderboard/suite_detail.html", board=board, rows=_with_sparklines(board), name=name,
                       chart=chart, page="suites")

    return cached_response(request, key=("suite", name, window), build=build)
