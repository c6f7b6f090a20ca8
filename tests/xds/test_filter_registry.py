"""The domain's filter types and the translators agree (both packages discover their modules)."""

from __future__ import annotations

from flowplane.domain.filters import SPECS
from flowplane.xds.filters import TRANSLATORS
from flowplane.xds.types import ENVOY_NAMES


def test_every_filter_type_has_a_translator_and_overrides_translate() -> None:
    assert set(SPECS) == set(TRANSLATORS)
    for name, spec in SPECS.items():
        assert (spec.override is None) == (TRANSLATORS[name].override is None), name
        assert spec.filter_type == name


def test_every_typed_filter_has_an_envoy_name_except_custom() -> None:
    assert set(SPECS) - {"custom"} <= set(ENVOY_NAMES)
