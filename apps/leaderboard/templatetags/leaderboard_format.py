"""Number formats for the leaderboard pages."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@register.filter
def signed_pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f} pts".replace("-", "−")


@register.filter
def usd(value: Decimal | None) -> str:
    if value is None:
        return "—"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.4f}"


@register.filter
def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"
