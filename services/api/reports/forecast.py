"""The weighted pipeline forecast: open entries' value times the win probability of the step
they reached (defined per step, else measured over closed entries): pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from services.api.reports.python import Counted
from shared.funnel import FunnelDefinition, entry_value


@dataclass(frozen=True, slots=True)
class StageForecast:
    step: int
    name: str
    open_entries: int
    value: float
    win_probability: float | None
    probability_source: Literal["defined", "measured", "none"]
    weighted_value: float


@dataclass(frozen=True, slots=True)
class PipelineTally:
    """Counted entries by how far they got (index r - 1 for r steps reached): those whose
    window is still open, the sum of their values, and those whose window has closed."""

    open: tuple[int, ...]
    open_value: tuple[float, ...]
    closed: tuple[int, ...]


def pipeline_tally(
    definition: FunnelDefinition, counted: Sequence[Counted], now_us: int
) -> PipelineTally:
    n = len(definition.steps)
    open_, open_value, closed = [0] * n, [0.0] * n, [0] * n
    for _, e in counted:
        if e.t0 + definition.window_us > now_us:
            open_[e.reached - 1] += 1
            open_value[e.reached - 1] += entry_value(definition, e) or 0.0
        else:
            closed[e.reached - 1] += 1
    return PipelineTally(tuple(open_), tuple(open_value), tuple(closed))


def weighted_stages(definition: FunnelDefinition, tally: PipelineTally) -> list[StageForecast]:
    """Weighted pipeline: sum of value x win probability of the reached step, open entries.
    A step without a defined probability gets the measured one: of the closed entries that
    got past it, the share that reached the last step."""
    n = len(definition.steps)
    stages = []
    for k, step in enumerate(definition.steps[:-1]):
        probability, source = step.win_probability, "defined"
        if probability is None:
            reached = sum(tally.closed[k:])
            won = tally.closed[n - 1]
            probability, source = (won / reached, "measured") if reached else (None, "none")
        stages.append(
            StageForecast(
                step=k + 1,
                name=step.name,
                open_entries=tally.open[k],
                value=tally.open_value[k],
                win_probability=probability,
                probability_source=source,  # type: ignore[arg-type]
                weighted_value=tally.open_value[k] * (probability or 0.0),
            )
        )
    return stages
