"""Query API: funnels as resources, reports, planning; Prometheus gauges (its layout:
docs/api-design.md)."""
