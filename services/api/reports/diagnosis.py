"""Where a funnel loses people: transitions ranked by loss and by gap to target, the
bottleneck, and the best and worst breakdown groups: pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.api.reports.python import FunnelReport, StepReport
from shared.funnel import FunnelDefinition


@dataclass(frozen=True, slots=True)
class StepDiagnosis:
    step: int
    name: str
    conversion_from_previous: float | None
    lost: int
    target_rate: float | None
    gap_to_target: float | None


@dataclass(frozen=True, slots=True)
class GroupSummary:
    value: str | None
    persons: int
    overall_conversion: float | None


@dataclass(frozen=True, slots=True)
class Diagnosis:
    by_loss: tuple[StepDiagnosis, ...]
    by_gap: tuple[StepDiagnosis, ...]
    bottleneck: StepDiagnosis | None
    best_group: GroupSummary | None
    worst_group: GroupSummary | None


def diagnose(
    definition: FunnelDefinition, report: FunnelReport, min_group_persons: int = 1
) -> Diagnosis:
    """Rank transitions by persons lost and by shortfall against their target rate.

    The bottleneck is the step furthest below its target when targets are set, otherwise
    the transition with the lowest conversion from the previous step.
    """
    transitions = []
    for k in range(1, len(report.steps)):
        s, prev = report.steps[k], report.steps[k - 1]
        target = definition.steps[k].target_rate
        rate = s.conversion_from_previous
        gap = target - rate if target is not None and rate is not None else None
        transitions.append(
            StepDiagnosis(s.step, s.name, rate, prev.persons - s.persons, target, gap)
        )
    by_loss = tuple(sorted(transitions, key=lambda t: -t.lost))
    gaps = [t for t in transitions if t.gap_to_target is not None]
    by_gap = tuple(sorted(gaps, key=lambda t: -(t.gap_to_target or 0.0)))
    measured = [t for t in transitions if t.conversion_from_previous is not None]
    bottleneck = None
    if by_gap and (by_gap[0].gap_to_target or 0) > 0:
        bottleneck = by_gap[0]
    elif measured:
        bottleneck = min(measured, key=lambda t: t.conversion_from_previous or 0.0)
    groups = [
        GroupSummary(g.value, g.steps[0].persons, _overall(g.steps))
        for g in report.groups
        if g.steps[0].persons >= min_group_persons and g.steps[0].persons
    ]
    ranked = sorted(groups, key=lambda g: g.overall_conversion or 0.0)
    return Diagnosis(
        by_loss,
        by_gap,
        bottleneck,
        ranked[-1] if ranked else None,
        ranked[0] if ranked else None,
    )


def _overall(steps: Sequence[StepReport]) -> float | None:
    return steps[-1].persons / steps[0].persons if steps[0].persons else None
