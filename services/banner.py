"""The banner of `funnel run`."""

from __future__ import annotations

import os
from typing import Any


def banner(common: Any, ports: dict[str, int], keys: dict[str, str]) -> None:
    """What `funnel run` prints once every service listens: addresses, keys, first commands."""
    allowed = os.environ.get("WEBHOOK_ALLOWED_NETWORKS", "")
    webhooks = (
        f"may target this machine (WEBHOOK_ALLOWED_NETWORKS={allowed});\n"
        "              receive them with: .venv/bin/funnel receive --port 9000 --secret whsec_..."
        if allowed
        else "public addresses only (WEBHOOK_ALLOWED_NETWORKS is empty)"
    )
    ingest, api = f"http://127.0.0.1:{ports['ingest']}", f"http://127.0.0.1:{ports['api']}"
    write_key, admin_key = keys["write"], keys["admin"]
    print(  # noqa: T201 - for the developer at the terminal
        f"""
Funnel Tracker is running (Ctrl-C stops everything).
  broker      {common.kafka_bootstrap_servers}
  database    {common.database_url}
  ingest      {ingest}   (docs {ingest}/docs, metrics {ingest}/metrics)
  api         {api}   (docs {api}/docs, metrics {api}/metrics)
  aggregator  metrics http://127.0.0.1:{ports["aggregator"]}/metrics
  project     default   write key {write_key}   admin key {admin_key}
  instance    key {keys["instance"]}   (creates projects and their keys: /v1/projects)
  keys        in var/dev-keys.json
  webhooks    {webhooks}

Try it:
  curl -s -X POST {api}/v1/funnels -H 'Authorization: Bearer {admin_key}' \\
    -H 'Content-Type: application/json' \\
    -d '{{"name": "signup", "steps": [{{"event": "visit"}}, {{"event": "signup"}}]}}'
  curl -s -X POST {ingest}/v1/events -u '{write_key}:' -H 'Content-Type: application/json' \\
    -d '{{"batch": [{{"user_id": "u1", "event": "visit"}},
                    {{"user_id": "u1", "event": "signup"}}]}}'
  curl -s {api}/v1/funnels -H 'Authorization: Bearer {admin_key}'
  curl -s '{api}/v1/funnels/FUNNEL_ID/report' -H 'Authorization: Bearer {admin_key}'
""",
        flush=True,
    )
