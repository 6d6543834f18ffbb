"""The funnel drawn as SVG: one centred bar per step, widths proportional to persons."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

from services.api.report import StepReport

WIDTH, BAR_H, GAP, TOP, LABEL_W = 760, 44, 14, 70, 230
COLOURS = ("#1f6feb", "#2f81f7", "#4493f8", "#58a6ff", "#79c0ff", "#a5d6ff")


def _pct(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.1f} %"


def funnel_svg(title: str, subtitle: str, steps: Sequence[StepReport]) -> str:
    top = max((s.persons for s in steps), default=0) or 1
    span = WIDTH - LABEL_W - 40
    height = TOP + len(steps) * (BAR_H + GAP) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="20" y="32" font-size="20" font-weight="bold" fill="#1f2328">'
        f"{escape(title)}</text>",
        f'<text x="20" y="54" font-size="13" fill="#59636e">{escape(subtitle)}</text>',
    ]
    for k, s in enumerate(steps):
        y = TOP + k * (BAR_H + GAP)
        w = max(span * s.persons / top, 2)
        x = LABEL_W + (span - w) / 2
        colour = COLOURS[min(k, len(COLOURS) - 1)]
        rates = (
            f"{_pct(s.conversion_from_previous)} of previous, "
            f"{_pct(s.conversion_from_start)} of start"
        )
        parts += [
            f'<text x="20" y="{y + 19}" font-size="14" fill="#1f2328">'
            f"{k + 1}. {escape(s.name)}</text>",
            f'<text x="20" y="{y + 37}" font-size="11" fill="#59636e">{escape(rates)}</text>',
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR_H}" rx="4" fill="{colour}"/>',
            f'<text x="{LABEL_W + span / 2:.1f}" y="{y + BAR_H / 2 + 5}" font-size="15" '
            f'text-anchor="middle" font-weight="bold" fill="#0d1117">{s.persons:,}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts)
