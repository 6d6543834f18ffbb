"""Aggregator: consumes funnel.events and keeps per-person funnel progress, exactly once.

Its layout (pure core, one transaction per batch, SQL under ``repository/``) is described in
docs/design.md.
"""
