"""Prometheus metrics (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

XDS_STREAMS = Gauge("flowplane_xds_streams", "Connected xDS streams", ["protocol"])
XDS_RESPONSES = Counter("flowplane_xds_responses_total", "xDS responses sent", ["protocol", "type"])
XDS_NACKS = Counter("flowplane_xds_nacks_total", "xDS responses rejected by clients", ["type"])
XDS_STREAM_CRASHES = Counter(
    "flowplane_xds_stream_crashes_total", "xDS stream actors that failed with an internal error"
)
SNAPSHOTS = Counter("flowplane_snapshots_published_total", "Snapshots published")
SNAPSHOT_BUILD_SECONDS = Histogram(
    "flowplane_snapshot_build_seconds",
    "Time to build a snapshot from a batch of changes",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SNAPSHOT_FAILURES = Counter(
    "flowplane_snapshot_failures_total", "Change batches the snapshot builder refused"
)
CONFIG_CHANGES = Counter(
    "flowplane_config_changes_total",
    "Committed configuration changes, by resource kind, action and the API path that made them",
    # Low cardinality by design: kind cluster|route_config|listener, action
    # create|update|delete, source native|platform. Never resource or team names.
    ["kind", "action", "source"],
)
ACTOR_FAILURES = Counter(
    "flowplane_actor_failures_total",
    "Unexpected exceptions (bugs) caught by an actor's supervision rule; the actor keeps serving",
    ["actor"],
)
