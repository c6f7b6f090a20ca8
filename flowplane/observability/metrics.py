"""Prometheus metrics (served at /metrics). Every series is listed in the README ("Observability").

Cardinality is bounded by design: labels carry route templates (never raw paths), resource kinds,
short xDS type names, team names (a set the operator controls) and small enums — never node ids,
resource names or token ids. A stream or change without a team is labelled `team="-"` (not a
valid team name).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NO_TEAM = "-"
"""The `team` label of a node, stream or change that has no team."""

# Latencies from microseconds (in-memory work) to seconds (a slow database or Envoy).
_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# Push and ACK latencies: milliseconds to tens of seconds (debounce, Envoy's own work).
_PUSH = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# -- REST ----------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "flowplane_http_requests_total",
    "REST requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "flowplane_http_request_duration_seconds",
    "REST request latency (first byte in to last byte out), by method and route template",
    ["method", "route"],
    buckets=_FAST,
)
AUTH_FAILURES = Counter(
    "flowplane_auth_failures_total",
    "Refused authentications and authorisations, by edge (rest|xds) and reason",
    ["edge", "reason"],
)

# -- configuration -------------------------------------------------------------------------------
CONFIG_CHANGES = Counter(
    "flowplane_config_changes_total",
    "Committed configuration changes, by resource kind, action, the API path that made them and"
    " the resource's team",
    # kind cluster|route_config|listener, action create|update|delete, source native|platform.
    ["kind", "action", "source", "team"],
)
CONFIG_MAILBOX = Gauge(
    "flowplane_config_mailbox_depth", "Commands waiting in the config actor's mailbox"
)
CONFIG_COMMAND_SECONDS = Histogram(
    "flowplane_config_command_seconds",
    "Config actor command latency, from submission to the reply (queueing, planning, commit),"
    " by command type",
    ["command"],
    buckets=_FAST,
)
ACTOR_FAILURES = Counter(
    "flowplane_actor_failures_total",
    "Unexpected exceptions (bugs) caught by an actor's supervision rule; the actor keeps serving",
    ["actor"],
)

# -- snapshots -----------------------------------------------------------------------------------
SNAPSHOTS = Counter("flowplane_snapshots_published_total", "Snapshots published")
SNAPSHOT_BUILD_SECONDS = Histogram(
    "flowplane_snapshot_build_seconds",
    "Time to build a snapshot from a batch of changes",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SNAPSHOT_FAILURES = Counter(
    "flowplane_snapshot_failures_total", "Change batches the snapshot builder refused"
)
# flowplane_snapshot_resources{type} and flowplane_snapshot_bytes{type} are read from the last
# published snapshot at scrape time (`flowplane.observability.snapshot_size`): no cost per build.

# -- xDS -----------------------------------------------------------------------------------------
XDS_STREAMS = Gauge(
    "flowplane_xds_streams",
    'Open xDS streams, by protocol (sotw|delta) and team (team="-": no team, or no request yet)',
    ["protocol", "team"],
)
XDS_STREAM_ENDS = Counter(
    "flowplane_xds_stream_ends_total",
    "xDS streams ended, by protocol, team and how: closed (by the client or the connection),"
    " refused (credentials or node), error (a bug), shutdown (the server stopping)",
    ["protocol", "team", "reason"],
)
XDS_RESPONSES = Counter(
    "flowplane_xds_responses_total",
    "xDS responses sent, by protocol, short type name and team",
    ["protocol", "type", "team"],
)
XDS_ACKS = Counter(
    "flowplane_xds_acks_total", "xDS responses acknowledged by clients", ["type", "team"]
)
XDS_NACKS = Counter(
    "flowplane_xds_nacks_total", "xDS responses rejected by clients", ["type", "team"]
)
XDS_STREAM_CRASHES = Counter(
    "flowplane_xds_stream_crashes_total", "xDS stream actors that failed with an internal error"
)
XDS_PUSH_SECONDS = Histogram(
    "flowplane_xds_push_seconds",
    "Write to sent: from a configuration write reaching the config actor to a response carrying"
    " it written to a stream (streams connected before the change only), by short type name",
    ["type"],
    buckets=_PUSH,
)
XDS_ACK_SECONDS = Histogram(
    "flowplane_xds_ack_seconds",
    "Sent to ACK: from a response written to a stream to the client's ACK of it",
    ["type"],
    buckets=_PUSH,
)

# -- storage -------------------------------------------------------------------------------------
STORAGE_SECONDS = Histogram(
    "flowplane_storage_operation_seconds",
    "Storage operation latency (one repository call: a query or a transaction), by operation",
    ["operation"],
    buckets=_FAST,
)
STORAGE_ERRORS = Counter(
    "flowplane_storage_errors_total",
    "Storage operations that failed, by operation and error class",
    ["operation", "error"],
)


def auth_reason(status: int, message: str) -> str:
    """A refusal's reason as a small fixed set (the messages carry details: never a label)."""
    if status == 429:
        return "rate_limited"
    if status == 403:
        return "forbidden"
    m = message.lower()
    for needle, reason in (
        ("missing", "missing"),
        ("must be 'bearer", "malformed"),
        ("not a valid jwt", "malformed"),
        ("not signed by a key", "unknown_key"),
        ("expired", "expired"),
        ("revoked", "revoked"),
        ("unknown token", "unknown_token"),
        ("not valid", "invalid"),
    ):
        if needle in m:
            return reason
    return "other"


def count_auth_failure(edge: str, err: object) -> None:
    """Count a refused authentication or authorisation (`err`: a FlowplaneError) on `edge`."""
    status = getattr(err, "status", 0)
    if status in (401, 403, 429):
        AUTH_FAILURES.labels(edge, auth_reason(status, str(getattr(err, "message", "")))).inc()
