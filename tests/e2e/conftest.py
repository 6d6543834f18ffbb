from __future__ import annotations

import pytest

from tests.databases import migrated
from tests.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    with migrated("sqlite", folder) as url:
        running = Stack(folder, url).start()
        try:
            yield running
        finally:
            running.stop()
