"""Bar charts drawn on the server as accessible SVG (standard library only).

One horizontal stacked bar per row, one segment per series (arrears by ageing bucket, payments by
how late they were paid, unmet need by reason). The SVG is an image with a title and a description
for screen readers; the same figures are in the table beside it. A figure that is not a number (a
count hidden under the small-number rule, `*`) draws no segment and is named in the description.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape

Series = tuple[str, str, str]  # key in each row's figures, name shown, fill colour

BUCKETS: tuple[Series, ...] = (
    ("not_due", "Not yet due", "#005eb8"),
    ("days_1_30", "1 to 30 days", "#41b6e6"),
    ("days_31_60", "31 to 60 days", "#ffb81c"),
    ("days_61_90", "61 to 90 days", "#ed8b00"),
    ("days_over_90", "Over 90 days", "#d5281b"),
)
WIDTH, LABEL_W, BAR_H, GAP = 640, 0, 22, 30


def pounds(pence: int) -> str:
    """Exact pounds from integer pence, with thousands separators: 123456 -> '£1,234.56'."""
    sign = "-" if pence < 0 else ""
    whole, part = divmod(abs(int(pence)), 100)
    return f"{sign}£{whole:,}.{part:02d}"


def _number(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def bar_chart(
    rows: Sequence[tuple[str, Mapping[str, object]]],
    series: Sequence[Series],
    *,
    title: str,
    figure: Callable[[int], str],
    empty: str,
    chart_id: str = "chart",
) -> str:
    """rows: (label, {series key: figure}). Bars scale to the largest row total.

    `figure` writes one number for the description (pounds, a count); `chart_id` keeps the title and
    description ids unique when a page holds more than one chart.
    """
    largest = max([sum(max(_number(f.get(k)) or 0, 0) for k, _, _ in series) for _, f in rows] + [1])
    legend_h = 24 * len(series)
    height = legend_h + 16 + max(1, len(rows)) * (BAR_H + GAP) + 8
    desc_parts = []
    for label, figures in rows:
        said = []
        for key, name, _ in series:
            value = figures.get(key)
            if _number(value) is None and value not in (None, ""):
                said.append(f"{name} {value} (not shown: a small number)")
            elif _number(value):
                said.append(f"{name} {figure(value)}")
        desc_parts.append(f"{label}: {', '.join(said) or 'none'}")
    desc = "; ".join(desc_parts) if desc_parts else empty
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" preserveAspectRatio="xMinYMin meet" class="app-chart">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]
    for i, (_, name, colour) in enumerate(series):
        y = 4 + i * 24
        out.append(
            f'<rect x="0" y="{y}" width="16" height="16" fill="{colour}"/>'
            f'<text x="24" y="{y + 13}" font-size="14" fill="#212b32">{escape(name)}</text>'
        )
    y = legend_h + 16
    for label, figures in rows:
        out.append(f'<text x="0" y="{y + 2}" font-size="14" fill="#212b32">{escape(label)}</text>')
        x = 0.0
        for key, _name, colour in series:
            value = _number(figures.get(key)) or 0
            if value <= 0:
                continue
            w = round(value / largest * (WIDTH - 2), 2)
            out.append(
                f'<rect x="{round(x, 2)}" y="{y + 8}" width="{w}" height="{BAR_H}" fill="{colour}" '
                f'data-series="{escape(key)}" data-value="{value}"/>'
            )
            x += w
        y += BAR_H + GAP
    out.append("</svg>")
    return "".join(out)


def arrears_chart(rows: list[tuple[str, dict[str, int]]], *, title: str = "Arrears by age") -> str:
    """rows: (organisation label, {bucket: pence})."""
    return bar_chart(rows, BUCKETS, title=title, figure=pounds, empty="Nothing is owed.")


PROMPT_SERIES: tuple[Series, ...] = (
    ("on_time_count", "Paid on time", "#007f3b"),
    ("within_30_days_count", "Paid 1 to 30 days late", "#ffb81c"),
    ("later_count", "Paid over 30 days late", "#d5281b"),
    ("open_count", "Not yet paid in full", "#768692"),
)


def prompt_payment_chart(rows: list[tuple[str, dict]], *, title: str) -> str:
    """rows: (label, the API's prompt-payment figures): payments that fell due, by how late they were paid."""
    return bar_chart(
        rows,
        PROMPT_SERIES,
        title=title,
        chart_id="prompt-chart",
        figure=lambda n: f"{n} payment{'' if n == 1 else 's'}",
        empty="No payments fell due in this window.",
    )


UNMET_SERIES: tuple[Series, ...] = (
    ("refused_no_capacity", "Refused: no capacity", "#d5281b"),
    ("refused_safeguarding", "Refused: safeguarding", "#ed8b00"),
    ("refused_not_active", "Refused: service not active", "#768692"),
    ("declined_no_capacity", "Declined by the charity: no capacity", "#330072"),
)


def unmet_need_chart(rows: list[tuple[str, dict]], *, title: str) -> str:
    """rows: (need and district, the API's counts, some of them '*' under the small-number rule)."""
    return bar_chart(
        rows,
        UNMET_SERIES,
        title=title,
        chart_id="unmet-chart",
        figure=lambda n: f"{n} referral{'' if n == 1 else 's'}",
        empty="No unmet need in this window.",
    )
