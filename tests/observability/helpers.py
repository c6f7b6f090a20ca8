"""Reading `/metrics` as Prometheus would: the text exposition parsed by prometheus-client."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, frozenset[tuple[str, str]]]


def parse(text: str) -> dict[Sample, float]:
    """(sample name, labels) -> value, for every sample of a scrape."""
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(scrape: Mapping[Sample, float], name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels` (0 when absent, as Prometheus' `or vector(0)`)."""
    return scrape.get((name, frozenset(labels.items())), 0.0)


def total(scrape: Mapping[Sample, float], name: str, **labels: str) -> float:
    """The sum of the samples `name` whose labels include `labels` (like `sum(name{...})`)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape.items() if n == name and want <= ls)


def families(text: str) -> set[str]:
    """Every metric family name of a scrape (histograms and counters by their base name)."""
    return {family.name for family in text_string_to_metric_families(text)}
