"""The README's configuration table names every variable of every settings class, no more."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.aggregator.settings import AggregatorSettings
from services.api.settings import ApiSettings
from services.ingest.settings import IngestSettings
from shared.config import CommonSettings

README = Path(__file__).parent.parent.parent / "README.md"


def variables(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (aliases included)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    found = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            found |= {str(choice) for choice in alias.choices if str(choice).isupper()}
        elif name not in CommonSettings.model_fields:
            found.add((prefix + name).upper())
    return found


def test_the_configuration_table_lists_exactly_the_variables_the_settings_read():
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}
    read = set().union(
        *(variables(s) for s in (CommonSettings, IngestSettings, AggregatorSettings, ApiSettings))
    )
    assert documented == read
