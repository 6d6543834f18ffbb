"""deploy/ is checked without a Docker engine: variables, commands and dashboard metrics."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from pydantic_settings import BaseSettings

import services.aggregator.metrics
import services.api.metrics
import services.ingest.metrics  # registers the metrics the dashboard reads
from services.aggregator.settings import AggregatorSettings
from services.api.settings import ApiSettings
from services.cli import main
from services.ingest.settings import IngestSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def variables(settings: type[BaseSettings]) -> set[str]:
    prefix = settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if alias is not None:
            names.update(str(a) for a in getattr(alias, "choices", [alias]) if str(a).isupper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


KNOWN = variables(IngestSettings) | variables(AggregatorSettings) | variables(ApiSettings)


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def our_services() -> dict[str, dict]:
    return {
        n: s for n, s in compose()["services"].items() if s.get("image") == "funnel-tracker:latest"
    }


def test_every_variable_the_compose_file_sets_is_read_by_a_settings_class():
    for name, service in our_services().items():
        unknown = set(service.get("environment", {})) - KNOWN
        assert unknown == set(), f"{name} sets variables no service reads: {unknown}"


def test_every_service_command_exists(capsys):
    services = our_services()
    assert {"ingest", "aggregator", "api", "migrate", "topics"} <= set(services)
    for service in services.values():
        program, subcommand, *_ = service["command"]
        assert program == "funnel"
        with pytest.raises(SystemExit) as exit_:
            main([subcommand, "--help"])
        assert exit_.value.code == 0, f"funnel {subcommand} is not a command"


def test_compose_runs_kafka_in_kraft_mode_and_postgres():
    services = compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert our_services()["api"]["environment"]["DATABASE_URL"].startswith("postgresql+asyncpg://")


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every series name the registered metric families can export, labelled or not."""
    return {
        metric.name + suffix
        for metric in REGISTRY.collect()
        for suffix in SUFFIXES.get(metric.type, ("",))
    }


def test_every_dashboard_expression_names_an_exported_metric():
    dashboard = json.loads((DEPLOY / "grafana/dashboards/funnel-tracker.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"]]
    # Label matchers and groupings name labels, not metrics.
    bare = [re.sub(r"\{[^}]*\}|\b(by|without)\s*\([^)]*\)", "", e) for e in exprs]
    names = {n for e in bare for n in re.findall(r"\bfunnel_[a-z0-9_]+", e)}
    assert len(names) >= 6
    assert names - exported_names() == set()


def test_prometheus_scrapes_every_service():
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"funnel-ingest", "funnel-aggregator", "funnel-api"}


def test_the_readme_documents_every_variable_the_services_read():
    readme = (DEPLOY.parent / "README.md").read_text()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", readme))
    assert KNOWN - documented == set()


def test_the_image_installs_the_project_without_extras_from_what_it_copies():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    install = re.search(r"pip install (.*) \.$", dockerfile, re.MULTILINE)
    assert install is not None, "the image does not pip install the project"
    assert "-c constraints.txt" in install.group(1)
    assert "[" not in install.group(0), "the image installs extras"
    copied = {
        Path(source).name
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for source in line.split()[1:-1]
    }
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = {"pyproject.toml", "constraints.txt", project["project"]["readme"], *packages}
    assert needed - copied == set()


def test_the_funnel_panels_select_and_name_steps_by_the_gauges_labels():
    dashboard = json.loads((DEPLOY / "grafana/dashboards/funnel-tracker.json").read_text())
    targets = [t for p in dashboard["panels"] for t in p["targets"] if "funnel_step_" in t["expr"]]
    assert len(targets) >= 4
    for target in targets:
        selected = re.findall(r"(\w+)\s*=~?", target["expr"])
        legend = re.findall(r"\{\{(\w+)\}\}", target["legendFormat"])
        assert set(selected) | set(legend) <= set(services.api.metrics.LABELS), target
        assert {"funnel_id", "step"} <= set(legend), "two steps or funnels would share a legend"
