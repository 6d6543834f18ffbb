"""schemathesis against a real ingest process (on the embedded broker): request bodies
generated from the documented schemas, every answer checked against /openapi.json."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.databases import migrated
from tests.stack import Stack

CONFIG = Path(__file__).with_name("ingest.schemathesis.toml")
EXAMPLES_PER_OPERATION = 12  # about 40 s here for all 17 operations


@pytest.fixture(scope="module")
def ingest_only(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schemathesis")
    with migrated("sqlite", folder) as url:
        running = Stack(folder, url, services=("ingest",)).start()
        try:
            yield running
        finally:
            running.stop()


def test_every_ingest_answer_is_what_its_openapi_document_declares(ingest_only):
    key = ingest_only.keys["write"]
    base = f"http://127.0.0.1:{ingest_only.ports['ingest']}"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{base}/openapi.json",
        "--auth",
        f"{key}:",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--no-color",
    ]
    env = {**os.environ, "INGEST_WRITE_KEY": key}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    summary = done.stdout[-6000:]
    assert done.returncode == 0, f"{summary}\n{done.stderr[-2000:]}\n{ingest_only.logs()}"
    assert "Tested: 17" in done.stdout, summary
    assert " passed" in done.stdout, summary
