"""Issue 15: the Grafana dashboard (deploy/grafana/flowplane.json) and the alerting rules
(deploy/prometheus/flowplane-rules.yml) only query what the server exports.

Every PromQL expression of both files is read; each metric it names must be a series of a real
scrape of `/metrics` (the plane running, real events made), with the suffix its type gives it
(`_total` for counters, `_bucket`/`_count`/`_sum` for histograms), and each label it groups or
filters by must be one of that metric's labels. With `promtool` on the PATH (Debian package
`prometheus`), the rules are also checked and unit-tested (`flowplane-rules.test.yml`), and the
dashboard's expressions are parsed by promtool as recording rules.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from flowplane.settings import Settings
from flowplane.testing.factories import cluster_body
from flowplane.testing.plane import run_plane

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "flowplane.json"
RULES = ROOT / "deploy" / "prometheus" / "flowplane-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "flowplane-rules.test.yml"

_METRIC = re.compile(r"\bflowplane_[a-z0-9_]+")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"\{([^}]*)\}")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def rule_exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


async def exported(settings: Settings) -> dict[str, set[str]]:
    """Series name -> its label names, from a real scrape (with `le` for histogram buckets)."""
    async with run_plane(settings) as plane:
        r = await plane.api.post("/api/v1/native/clusters", json=cluster_body())
        assert r.status_code == 201
        await plane.settled()
        assert (await plane.api.get("/api/v1/native/clusters/backend")).status_code == 200
        text = (await plane.api.get("/metrics")).text
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("flowplane_"):
            continue
        labels = _labels_of(text, family.name)
        for suffix in _SUFFIXES.get(family.type, ("",)):
            out[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def _labels_of(text: str, family: str) -> set[str]:
    """A family's label names: from its samples, else from the metric definition (a labelled
    series without children yet has HELP and TYPE lines only)."""
    # the registry's private map is the only place listing a metric's label names before any
    # child exists
    for collector in list(REGISTRY._collector_to_names):
        if getattr(collector, "_name", None) == family:
            return set(getattr(collector, "_labelnames", ()))
    found: set[str] = set()
    for line in text.splitlines():
        if line.startswith(family) and "{" in line:
            found |= {kv.split("=")[0] for kv in line.split("{", 1)[1].split("}")[0].split(",")}
    return found


def references(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names grouped or matched on) of one expression."""
    labels = {
        label.strip()
        for group in _GROUPING.findall(expr) + [m for m in _MATCHER.findall(expr)]
        for label in re.split(r",", group)
        if label.strip()
    }
    names = {re.split(r"\s*[=!]~?\s*", label)[0] for label in labels}
    return set(_METRIC.findall(expr)), names


def test_the_files_have_the_expressions_an_operator_needs() -> None:
    """The dashboard covers each area of the issue; the rules name each alert it asks for."""
    dash = " ".join(dashboard_exprs())
    for metric in ("http_requests_total", "http_request_duration_seconds", "auth_failures_total",
                   "config_changes_total", "config_mailbox_depth", "config_command_seconds",
                   "snapshot_build_seconds", "snapshot_bytes", "xds_streams", "xds_acks_total",
                   "xds_nacks_total", "xds_push_seconds", "xds_ack_seconds",
                   "storage_operation_seconds", "storage_errors_total"):  # fmt: skip
        assert f"flowplane_{metric}" in dash, metric
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"FlowplaneNacksRising", "FlowplaneStreamDrops", "FlowplanePushLatencyHigh",
            "FlowplaneAuthFailures", "FlowplaneStorageErrors"} <= alerts  # fmt: skip


async def test_every_expression_names_only_exported_series_and_labels(
    xds_settings: Settings,
) -> None:
    series = await exported(xds_settings)
    problems: list[str] = []
    for expr in dashboard_exprs() + rule_exprs():
        metrics, labels = references(expr)
        assert metrics, expr
        for m in metrics:
            if m not in series:
                problems.append(f"{m} is not exported ({expr})")
        known = set().union(*(series.get(m, set()) for m in metrics))
        for label in labels - known:
            problems.append(f"label {label} is not on {sorted(metrics)} ({expr})")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_an_unknown_metric_and_label() -> None:
    """The reference extraction the test above relies on finds names and labels."""
    metrics, labels = references('sum by (team, le) (rate(flowplane_nope_total{kind="x"}[5m]))')
    assert metrics == {"flowplane_nope_total"} and labels == {"team", "le", "kind"}


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    checked = promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=RULES.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules: dict[str, Any] = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"flowplane:dashboard:{i}", "expr": expr}
        for i, expr in enumerate(dashboard_exprs())
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", path.name, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
