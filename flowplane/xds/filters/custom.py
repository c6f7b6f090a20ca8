"""`custom` -> the message the client named by `typeUrl`, parsed from its protobuf JSON when the
config was validated (the same for per-scope overrides). Packed deterministically by the HCM and
route translation like every other filter config."""

from __future__ import annotations

from google.protobuf.message import Message

from flowplane.domain.filters import FilterModel
from flowplane.domain.filters.custom import CustomConfig

TYPE = "custom"


def config_to_proto(config: FilterModel) -> Message:
    assert isinstance(config, CustomConfig)
    return config.message()


def override_to_proto(override: FilterModel) -> Message:
    assert isinstance(override, CustomConfig)
    return override.message()
