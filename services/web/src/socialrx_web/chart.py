"""The arrears bar chart, drawn on the server as accessible SVG (standard library only).

One horizontal stacked bar per organisation, one segment per ageing bucket. The SVG is an image
with a title and a description for screen readers; the same figures are in the table beside it.
"""

from __future__ import annotations

from html import escape

BUCKETS = (("not_due", "Not yet due", "#005eb8"), ("days_1_30", "1 to 30 days", "#41b6e6"),
           ("days_31_60", "31 to 60 days", "#ffb81c"), ("days_61_90", "61 to 90 days", "#ed8b00"),
           ("days_over_90", "Over 90 days", "#d5281b"))
WIDTH, LABEL_W, BAR_H, GAP = 640, 0, 22, 30


def pounds(pence: int) -> str:
    """Exact pounds from integer pence, with thousands separators: 123456 -> '£1,234.56'."""
    sign = "-" if pence < 0 else ""
    whole, part = divmod(abs(int(pence)), 100)
    return f"{sign}£{whole:,}.{part:02d}"


def arrears_chart(rows: list[tuple[str, dict[str, int]]], *, title: str = "Arrears by age") -> str:
    """rows: (organisation label, {bucket: pence}). Bars scale to the largest total owed."""
    largest = max([sum(b.get(k, 0) for k, _, _ in BUCKETS) for _, b in rows] + [1])
    legend_h = 24 * len(BUCKETS)
    height = legend_h + 16 + max(1, len(rows)) * (BAR_H + GAP) + 8
    desc_parts = []
    for label, buckets in rows:
        figures = ", ".join(f"{name} {pounds(buckets.get(key, 0))}" for key, name, _ in BUCKETS if buckets.get(key, 0))
        desc_parts.append(f"{label}: {figures or 'nothing owed'}")
    desc = "; ".join(desc_parts) if desc_parts else "Nothing is owed."
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="chart-title chart-desc" '
           f'viewBox="0 0 {WIDTH} {height}" width="100%" preserveAspectRatio="xMinYMin meet" class="app-chart">',
           f'<title id="chart-title">{escape(title)}</title>', f'<desc id="chart-desc">{escape(desc)}</desc>']
    for i, (_, name, colour) in enumerate(BUCKETS):
        y = 4 + i * 24
        out.append(f'<rect x="0" y="{y}" width="16" height="16" fill="{colour}"/>'
                   f'<text x="24" y="{y + 13}" font-size="14" fill="#212b32">{escape(name)}</text>')
    y = legend_h + 16
    for label, buckets in rows:
        out.append(f'<text x="0" y="{y + 2}" font-size="14" fill="#212b32">{escape(label)}</text>')
        x = 0.0
        for key, name, colour in BUCKETS:
            pence = buckets.get(key, 0)
            if pence <= 0:
                continue
            w = round(pence / largest * (WIDTH - 2), 2)
            out.append(f'<rect x="{round(x, 2)}" y="{y + 8}" width="{w}" height="{BAR_H}" fill="{colour}" '
                       f'data-bucket="{key}" data-pence="{pence}"/>')
            x += w
        y += BAR_H + GAP
    out.append("</svg>")
    return "".join(out)
