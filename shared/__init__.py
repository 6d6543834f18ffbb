"""Contracts shared by the services: wire schema, tables, migrations, logging."""
