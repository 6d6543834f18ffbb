"""Ingest: the HTTP tracking API that publishes accepted events to Kafka."""
