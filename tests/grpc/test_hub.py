"""flowplane/grpc/hub.py: a published snapshot pokes every registered stream, once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from flowplane.grpc.hub import Hub
from flowplane.xds.snapshot import Snapshot


class _State:
    node_id = None

    def status(self) -> dict[str, object]:
        return {}

    def versions(self) -> list[tuple[str, str | None, str | None, bool]]:
        return []


def test_a_failing_stream_does_not_stop_the_push_to_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hub pokes each stream in one pass (`flowplane.grpc.ads`: what is owed is written
    there): an exception from one stream's poke is logged and the following streams are still
    poked, each once per publish."""
    loop = asyncio.new_event_loop()
    try:
        hub = Hub()
        hub.bind_loop(loop)
        poked: list[str] = []

        def broken() -> None:
            poked.append("broken")
            raise RuntimeError("a bug in one stream actor")

        hub.register("sotw", "a", _State(), broken)
        hub.register("sotw", "b", _State(), lambda: poked.append("b"))
        with caplog.at_level(logging.ERROR, logger="flowplane.grpc.hub"):
            hub.publish(Snapshot.empty())
            loop.run_until_complete(asyncio.sleep(0))  # the one hop onto the loop
        assert poked == ["broken", "b"]
        assert "xDS stream wake-up failed" in caplog.text
        assert "a bug in one stream actor" in caplog.text
    finally:
        loop.close()
