"""The funnel drawn as SVG: a bar per step, widths proportional to persons, with each step's
conversion, drop-off and value, and the funnel's overall conversion.

Text widths are estimated (no font metrics here): a character counts one unit, a wide one
(CJK) two. Names that do not fit are wrapped, then shortened with "…"; every shortened text
carries its full value as an SVG ``<title>`` (shown on hover). Everything the client named is
escaped, and characters XML cannot hold are replaced, so the picture is always well-formed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape

from services.api.reports.cache import Computed
from services.api.reports.python import StepReport

WIDTH, PAD, ROW_H, BAR_H, TOP = 800, 20, 60, 40, 78
LABEL_W, SIDE_W = 250, 170  # the step names' column, and the drop-off column at the right
SPAN = WIDTH - LABEL_W - SIDE_W - 20  # where the bars are drawn
COLOURS = ("#0b4f9c", "#1160b7", "#1a6fcc", "#2474d0", "#2f7dd6", "#3a86d9")
INK, MUTED, LOST, TRACK = "#1f2328", "#59636e", "#b42318", "#eef1f4"
SVG = {
    "description": "An SVG picture.",
    "content": {"image/svg+xml": {"schema": {"type": "string"}}},
}
# The picture is a document of its own when opened directly: it may run nothing.
SVG_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}
# Characters XML 1.0 cannot hold (and lone surrogates, which no encoding can).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Font:
    size: int
    unit: float  # an estimate of one narrow character's width, in pixels


NAME, SMALL, TITLE, COUNT = Font(14, 7.6), Font(11, 6.0), Font(20, 11.5), Font(15, 9.0)


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _units(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fit(text: str, room: int) -> str:
    """The longest start of ``text`` at most ``room`` units wide."""
    used = 0
    for i, c in enumerate(text):
        used += _units(c)
        if used > room:
            return text[:i]
    return text


def wrap(text: str, room: int, max_lines: int) -> list[str]:
    """``text`` in lines of at most ``room`` units, broken at spaces (a word longer than a
    line, such as CJK text without spaces, anywhere); past ``max_lines`` the last line ends
    in "…"."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        joined = f"{line} {word}" if line else word
        if _units(joined) <= room:
            line = joined
            continue
        if _units(word) > room:  # cut it, starting on the current line
            word, line = joined, ""
        else:
            lines.append(line)
        while _units(word) > room:
            head = _fit(word, room) or word[0]
            lines.append(head.rstrip())
            word = word[len(head) :].lstrip()
        line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _fit(lines[-1], room - 1) + "…"
    return lines or [""]


def _pct(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.1f} %"


def _amount(value: float) -> str:
    return f"{value:,.0f}" if value.is_integer() or abs(value) >= 1000 else f"{value:,.2f}"


def _text(x: float, y: float, font: Font, content: str, *, fill: str = INK, extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{font.size}" fill="{fill}"{extra}>'
        f"{escape(content)}</text>"
    )


def _rect(x: float, y: float, width: float, fill: str) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{BAR_H}" rx="4" fill="{fill}"/>'
    )


def _titled(full: str, parts: list[str]) -> str:
    """A group of text elements with the full text as its tooltip."""
    return f"<g><title>{escape(full)}</title>{''.join(parts)}</g>"


def _header(
    title: str, subtitle: str, steps: Sequence[StepReport], value_property: str | None
) -> list[str]:
    first, last = (steps[0].persons, steps[-1].persons) if steps else (0, 0)
    overall = last / first if first else None
    right = ' text-anchor="end"'
    name_room = int((WIDTH - 2 * PAD - 250) / TITLE.unit)
    parts = [
        _titled(
            title,
            [_text(PAD, 34, TITLE, wrap(title, name_room, 1)[0], extra=' font-weight="bold"')],
        ),
        _text(PAD, 56, SMALL, subtitle, fill=MUTED),
        _text(
            WIDTH - PAD,
            34,
            Font(17, 10),
            f"{_pct(overall)} overall",
            extra=right + ' font-weight="bold"',
        ),
        _text(
            WIDTH - PAD,
            56,
            SMALL,
            f"{first:,} entered, {last:,} converted",
            fill=MUTED,
            extra=right,
        ),
    ]
    value = steps[-1].value_sum if steps and value_property else None
    if value_property and value is not None:
        label = wrap(value_property, 20, 1)[0]
        shown = f"{label}: {_amount(value)} (average {_amount(steps[-1].value_average or 0)})"
        parts.append(
            _titled(value_property, [_text(WIDTH - PAD, 72, SMALL, shown, fill=MUTED, extra=right)])
        )
    return parts


def _label(k: int, s: StepReport, y: float) -> list[str]:
    lines = wrap(f"{k + 1}. {s.name}", int((LABEL_W - PAD - 10) / NAME.unit), 2)
    texts = [_text(PAD, y + 17 + 16 * i, NAME, line) for i, line in enumerate(lines)]
    rates = (
        f"{_pct(s.conversion_from_previous)} of previous, {_pct(s.conversion_from_start)} of start"
    )
    texts.append(_text(PAD, y + 17 + 16 * len(lines), SMALL, rates if k else "entered", fill=MUTED))
    return [_titled(s.name, texts)]


def _bar(k: int, s: StepReport, top: int, y: float) -> list[str]:
    """The bar, its persons inside it (or beside it when it is too narrow), no bar for 0."""
    centre, bar_y = LABEL_W + SPAN / 2, y + (ROW_H - BAR_H) / 2
    parts = [_rect(LABEL_W, bar_y, SPAN, TRACK)]
    count, w = f"{s.persons:,}", SPAN * s.persons / top if top else 0.0
    baseline, bold = bar_y + BAR_H / 2 + 5, ' font-weight="bold"'
    if s.persons == 0:
        return [
            *parts,
            _text(centre, baseline, COUNT, "0", fill=MUTED, extra=' text-anchor="middle"' + bold),
        ]
    w = max(w, 3.0)
    colour = COLOURS[min(k, len(COLOURS) - 1)]
    parts.append(_rect(centre - w / 2, bar_y, w, colour))
    if w >= len(count) * COUNT.unit + 16:
        return [
            *parts,
            _text(
                centre, baseline, COUNT, count, fill="#ffffff", extra=' text-anchor="middle"' + bold
            ),
        ]
    return [*parts, _text(centre + w / 2 + 6, baseline, COUNT, count, extra=bold)]


def _side(k: int, s: StepReport, last: bool, y: float, value_property: str | None) -> list[str]:
    """Drop-off (persons who stopped at this step, windows closed), in progress, value."""
    x, lines = WIDTH - SIDE_W, []
    if not last:
        lines.append((f"{s.dropped:,} dropped ({_pct(s.drop_off_rate)})", LOST))
        if s.in_progress:
            lines.append((f"{s.in_progress:,} in progress", MUTED))
    else:
        lines.append(("converted", MUTED))
    if value_property and s.value_sum is not None:
        lines.append((f"value {_amount(s.value_sum)}", MUTED))
    return [_text(x, y + 17 + 15 * i, SMALL, t, fill=c) for i, (t, c) in enumerate(lines[:3])]


def funnel_svg(
    title: str, subtitle: str, steps: Sequence[StepReport], value_property: str | None = None
) -> str:
    title, subtitle = _clean(title), _clean(subtitle)
    value_property = _clean(value_property) if value_property else None
    steps = [_cleaned(s) for s in steps]
    top = max((s.persons for s in steps), default=0)
    height = TOP + len(steps) * ROW_H + PAD
    first, last = (steps[0].persons, steps[-1].persons) if steps else (0, 0)
    summary = f"{title}: {first:,} entered, {last:,} converted"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" font-family="Helvetica, Arial, sans-serif">',
        f"<title>{escape(summary)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        *_header(title, subtitle, steps, value_property),
    ]
    for k, s in enumerate(steps):
        y = TOP + k * ROW_H
        parts += _label(k, s, y)
        parts += _bar(k, s, top, y)
        parts += _side(k, s, k == len(steps) - 1, y, value_property)
    parts.append("</svg>")
    return "\n".join(parts)


def _cleaned(s: StepReport) -> StepReport:
    return replace(s, name=_clean(s.name))


def report_svg(name: str, value_property: str | None, computed: Computed, mode: str) -> str:
    """A funnel's computed report as its chart, subtitled with the range and count mode."""
    subtitle = f"{computed.start.date()} to {computed.end.date()}, {mode}"
    return funnel_svg(name, subtitle, computed.report.steps, value_property)
