"""Aggregator: consumes funnel.events and keeps per-person funnel progress, exactly once."""
