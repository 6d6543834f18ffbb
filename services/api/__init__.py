"""Query API: funnels as resources, reports, planning; Prometheus gauges."""
