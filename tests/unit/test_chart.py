"""The chart's SVG: always well-formed whatever the names, and the README's example current."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from services.api.chart import funnel_svg, wrap
from tests import chart_example

SVG = "{http://www.w3.org/2000/svg}"
ANY_TEXT = st.text(max_size=300)  # every code point, controls and surrogates included


def _texts(element: ET.Element, tag: str) -> list[str]:
    return ["".join(t.itertext()) for t in element.iter(f"{SVG}{tag}")]


@given(title=ANY_TEXT, names=st.lists(ANY_TEXT, min_size=2, max_size=6), value=ANY_TEXT)
def test_the_svg_is_well_formed_and_keeps_every_printable_name_whole(title, names, value):
    steps = [replace(chart_example.steps()[0], step=k + 1, name=n) for k, n in enumerate(names)]
    svg = ET.fromstring(funnel_svg(title, "subtitle", steps, value or None))
    titles = _texts(svg, "title")
    for name in [title, *names]:
        if name.isprintable():  # others have their unholdable characters replaced
            assert name in titles or f"{name}: " in titles[0]


def test_names_with_markup_are_shown_as_text_not_markup():
    steps = [replace(s, name=f'<b>"{s.step}" & co</b>') for s in chart_example.steps()]
    svg = ET.fromstring(funnel_svg("<script>alert(1)</script>", "", steps))
    assert not list(svg.iter(f"{SVG}script"))
    assert not list(svg.iter("b"))
    assert '1. <b>"1" & co</b>' in _texts(svg, "text")
    assert "<script>alert(1)</script>" in _texts(svg, "text")


def test_long_names_are_wrapped_then_shortened_and_wide_characters_count_double():
    assert wrap("Pricing page viewed", 28, 2) == ["Pricing page viewed"]
    assert wrap("Added a plan to the cart and opened the checkout form", 28, 2) == [
        "Added a plan to the cart and",
        "opened the checkout form",
    ]
    assert wrap("one two three four five six seven eight nine ten", 10, 2) == [
        "one two",
        "three fou…",
    ]
    assert wrap("x" * 30, 12, 2) == ["x" * 12, "x" * 11 + "…"]
    assert wrap("注册完成并且验证了电子邮件地址", 10, 2) == ["注册完成并", "且验证了…"]


def test_the_readme_example_is_the_current_rendering():
    committed = chart_example.PATH.read_text()
    assert committed == chart_example.example(), (
        "docs/chart-example.svg is out of date: run .venv/bin/python -m tests.chart_example"
    )
    svg = ET.fromstring(committed)
    shown = _texts(svg, "text")
    assert "43.9 % overall" in shown
    assert "revenue: 21,450 (average 42.90)" in shown
    assert "240 dropped (30.0 %)" in shown


def test_characters_xml_cannot_hold_are_replaced():
    steps = [replace(s, name=f"a\x00b\x1b[31m\ud800{s.step}") for s in chart_example.steps()]
    text = funnel_svg("t\x07", "\ufffe", steps, "v\x0c")
    svg = ET.fromstring(text.encode("utf-8", "strict"))
    assert "1. a\ufffdb\ufffd[31m\ufffd1" in _texts(svg, "text")
