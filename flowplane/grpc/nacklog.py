"""Rate-limited, per-node logging of NACKs (issue 11, item 12).

A client decides how often it NACKs: 10,000 NACKs in 0.16 s once turned into 30 MB of WARNING
lines, each listing every resource name. `NackLog` writes, per node, the first NACK with its
detail, then at most one summary line per `interval` with the count of NACKs since the last line
(and the latest one's detail), and a last summary when the node's stream closes if any NACK went
unlogged. Resource names and messages are truncated, so one line has a bounded size too.

The clock is injected (monotonic seconds) so the limits are tested without sleeping. The count
of every NACK still goes to the `flowplane_xds_nacks_total` metric (the edge does that), so
nothing is lost to the limiter but log lines.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from flowplane.xds.sotw import Rejection

__all__ = ["MAX_LOGGED_NAMES", "MAX_MESSAGE_CHARS", "NackLog", "summarise_names"]

MAX_LOGGED_NAMES: Final = 10
"""Resource names one log line lists; the rest are counted ("... and 49,990 more")."""
MAX_MESSAGE_CHARS: Final = 500
"""Characters of a NACK's error_detail one log line quotes (Envoy's can be very long)."""
_MAX_NODES: Final = 10_000
"""Nodes remembered at once (node ids are client input): the oldest is forgotten past this,
after its pending summary is written."""


def summarise_names(names: Sequence[str], limit: int = MAX_LOGGED_NAMES) -> str:
    """`names` for a log line: at most `limit` of them, then how many more there were."""
    if not names:
        return "-"
    shown = ", ".join(names[:limit])
    rest = len(names) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def _truncate(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return message if len(message) <= limit else f"{message[:limit]}... ({len(message)} chars)"


def _short(type_url: str) -> str:
    return type_url.rpartition(".")[2]


@dataclass(slots=True)
class _NodeState:
    logged_at: float  # when this node's last line was written
    suppressed: int = 0  # NACKs since that line that were not logged
    latest: Rejection | None = None  # the newest of them
    fields: Mapping[str, object] | None = None  # the log fields of the node's stream


class NackLog:
    """Per node: the first NACK in full, then at most one summary line per `interval` seconds.

    `nack(node, rejection)` is called for every NACK; `close(node)` when the node's stream ends.
    Lines go to `logger` at WARNING. Memory is bounded by `max_nodes` entries.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_nodes: int = _MAX_NODES,
    ) -> None:
        self._log = logger
        self.interval = interval
        self._clock = clock
        self._max_nodes = max_nodes
        self._nodes: OrderedDict[str, _NodeState] = OrderedDict()

    def nack(
        self, node: str, rejection: Rejection, fields: Mapping[str, object] | None = None
    ) -> None:
        """Note one NACK of `node`; log it, summarise it, or count it for a later summary.
        `fields` are the stream's structured log fields (team, token id, ...)."""
        now = self._clock()
        st = self._nodes.get(node)
        if st is None:
            self._first(node, rejection, now, fields)
            return
        if now - st.logged_at < self.interval:
            st.suppressed += 1
            st.latest = rejection
            return
        if st.suppressed:
            st.suppressed += 1  # this one is counted in the summary it triggers
            st.latest = rejection
            self._summary(node, st, now)
        else:  # quiet for a whole interval: a new first NACK
            self._nodes.pop(node)
            self._first(node, rejection, now, fields)

    def close(self, node: str) -> None:
        """`node`'s stream ended: write its pending summary, if any, and forget it."""
        st = self._nodes.pop(node, None)
        if st is not None and st.suppressed:
            self._summary(node, st, self._clock())

    def _first(
        self, node: str, rej: Rejection, now: float, fields: Mapping[str, object] | None
    ) -> None:
        self._log.warning(
            "node %s rejected %s version %s (%s): %s",
            node, _short(rej.type_url), rej.version, summarise_names(rej.resource_names),
            _truncate(rej.message), extra=_extra(node, rej, fields),
        )  # fmt: skip
        self._nodes[node] = _NodeState(now, fields=fields)
        if len(self._nodes) > self._max_nodes:
            oldest, st = self._nodes.popitem(last=False)
            if st.suppressed:
                self._summary(oldest, st, now)

    def _summary(self, node: str, st: _NodeState, now: float) -> None:
        rej = st.latest
        assert rej is not None
        self._log.warning(
            "node %s sent %d more NACKs in the last %.0f s (further ones summarised every %.0f s);"
            " latest: %s version %s (%s): %s",
            node, st.suppressed, now - st.logged_at, self.interval, _short(rej.type_url),
            rej.version, summarise_names(rej.resource_names), _truncate(rej.message),
            extra=_extra(node, rej, st.fields),
        )  # fmt: skip
        st.logged_at, st.suppressed, st.latest = now, 0, None


def _extra(node: str, rej: Rejection, fields: Mapping[str, object] | None) -> dict[str, object]:
    """A NACK line's structured fields: the stream's, then the node, type, version and Envoy's
    message (truncated)."""
    return {**(fields or {}), "node": node, "type": _short(rej.type_url),
            "version": rej.version, "error_detail": _truncate(rej.message)}  # fmt: skip
