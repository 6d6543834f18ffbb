"""Ready funnel models (AIDA, search marketing, e-commerce, product growth, B2B pipeline),
each proposing the 7-day and 90-day re-marketing rules."""

from __future__ import annotations

from typing import Any

DAY = 86_400

REMARKETING_PROPOSALS = [
    {"name": "7-day", "from_step": 1, "after_seconds": 7 * DAY},
    {
        "name": "90-day",
        "from_step": 1,
        "after_seconds": 14 * DAY,
        "repeat_every_seconds": 14 * DAY,
        "until_seconds": 90 * DAY,
    },
]


def _steps(*specs: tuple[str, str] | tuple[str, str, dict[str, Any]]) -> list[dict[str, Any]]:
    steps = []
    for spec in specs:
        event, name = spec[0], spec[1]
        extra = spec[2] if len(spec) > 2 else {}
        steps.append({"event": event, "name": name, **extra})
    return steps


TEMPLATES: dict[str, dict[str, Any]] = {
    "aida": {
        "title": "AIDA (+ loyalty)",
        "description": "Awareness, interest, desire/decision, action, then repeat purchase.",
        "steps": _steps(
            ("ad_impression", "awareness"),
            ("content_view", "interest"),
            ("add_to_cart", "desire / decision"),
            ("order_completed", "action"),
            ("repeat_order", "loyalty"),
        ),
    },
    "search_marketing": {
        "title": "Search marketing",
        "description": "Impression, click, visit, inquiry, order, with the four named rates.",
        "steps": _steps(
            ("impression", "impression"),
            ("click", "click", {"rate_name": "click-through rate"}),
            ("visit", "visit", {"rate_name": "visit rate"}),
            ("inquiry", "inquiry", {"rate_name": "inquiry rate"}),
            ("order", "order", {"rate_name": "order rate"}),
        ),
    },
    "ecommerce": {
        "title": "E-commerce",
        "description": "Page view, product view, add to cart, checkout, order completed.",
        "steps": _steps(
            ("page_view", "page view"),
            ("product_view", "product view"),
            ("add_to_cart", "add to cart"),
            ("checkout", "checkout / pay"),
            ("order_completed", "order completed"),
        ),
        "value_property": "revenue",
    },
    "product_growth": {
        "title": "Product growth",
        "description": "Acquisition, activation, retention, payment, referral.",
        "steps": _steps(
            ("signup_started", "acquisition"),
            ("activated", "registration / activation"),
            ("returned", "retention"),
            ("subscription_paid", "payment"),
            ("referral_sent", "referral"),
        ),
        "window_seconds": 90 * DAY,
    },
    "b2b_pipeline": {
        "title": "B2B sales pipeline",
        "description": "Sales stages with their win probabilities (10/25/50/75/90/100 %).",
        "steps": _steps(
            ("lead_created", "target customer", {"win_probability": 0.10}),
            ("lead_qualified", "qualified, needs confirmed", {"win_probability": 0.25}),
            ("solution_approved", "technically approved, shortlisted", {"win_probability": 0.50}),
            ("negotiation", "negotiation, intent", {"win_probability": 0.75}),
            ("verbal_commit", "verbal commitment / bid won", {"win_probability": 0.90}),
            ("contract_signed", "contract signed", {"win_probability": 1.00}),
        ),
        "window_seconds": 366 * DAY,
        "value_property": "deal_value",
    },
}


def template_definition(template_id: str) -> dict[str, Any]:
    """A funnel definition document proposed by a template (before overrides)."""
    t = TEMPLATES[template_id]
    doc = {
        "name": t["title"],
        "steps": [dict(s) for s in t["steps"]],
        "remarketing": [dict(r) for r in REMARKETING_PROPOSALS],
    }
    for key in ("window_seconds", "value_property"):
        if key in t:
            doc[key] = t[key]
    return doc
