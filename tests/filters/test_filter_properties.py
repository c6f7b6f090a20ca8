"""Properties over every filter type, with Hypothesis: mutate known-good configs and overrides
(replace, drop or add random JSON anywhere in them) and check that

- validation either accepts or raises the domain's refusal (ValueError / pydantic's
  ValidationError, which the API turns into a 400) — never anything else (a 500);
- whatever is accepted translates without an exception, deterministically (same bytes twice).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from flowplane.domain.filters import SPECS, parse_config, parse_override
from flowplane.xds.filters import filter_config, override_config
from tests.filters import (
    test_custom,
    test_custom_response,
    test_ext_authz,
    test_header_mutation,
    test_jwt_authn,
    test_local_rate_limit,
    test_local_rate_limit_keys,
)

GOOD_CONFIGS: dict[str, list[dict[str, Any]]] = {
    "header_mutation": [test_header_mutation.FULL],
    "local_rate_limit": [
        test_local_rate_limit.FULL,
        test_local_rate_limit_keys.NO_BUCKET,
        test_local_rate_limit_keys.BY_IP,
    ],
    "cors": [{}],
    "jwt_authn": [
        {
            "providers": {
                "p": {
                    "issuer": "https://i.test",
                    "localJwks": test_jwt_authn.LOCAL,
                    "claimToHeaders": [{"headerName": "x-u", "claimName": "sub"}],
                },
                "q": {"issuer": "https://j.test", "remoteJwks": test_jwt_authn.REMOTE},
            },
            "rules": [
                {
                    "match": {"prefix": "/"},
                    "requires": {"requiresAny": [{"provider": "p"}, {"provider": "q"}]},
                }
            ],
            "requirementMap": {"r": {"provider": "p"}},
        }
    ],
    "ext_authz": [test_ext_authz.GRPC, test_ext_authz.HTTP],
    "custom_response": [test_custom_response.RULES],
    "custom": [test_custom.SMALL],
    "router": [{}],
}
GOOD_OVERRIDES: dict[str, list[dict[str, Any]]] = {
    "header_mutation": [test_header_mutation.ADD_REQ],
    "local_rate_limit": [test_local_rate_limit.FULL, test_local_rate_limit_keys.BY_HEADER],
    "cors": [
        {
            "origins": [{"exact": "https://a.test"}, {"regex": "https://.*[.]b[.]test"}],
            "methods": ["GET"],
            "maxAge": 60,
            "allowCredentials": True,
        }
    ],
    "jwt_authn": [{"requirementName": "r"}],
    "ext_authz": [test_ext_authz.CONTEXT],
    "custom_response": [test_custom_response.RULES],
    "custom": [test_custom.SMALL],
}

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["", "*", "/", "x-a", "GET", ".*", "(", "host"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, good: list[dict[str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(good)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON)
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(JSON)
    return doc


REFUSED = (ValueError, ValidationError)  # NestedProblems is a ValueError


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_configs_are_refused_cleanly_or_translate_deterministically(data: st.DataObject) -> None:
    filter_type = data.draw(st.sampled_from(sorted(SPECS)))
    config = data.draw(mutated(GOOD_CONFIGS[filter_type]))
    try:
        model = parse_config(filter_type, config)
    except REFUSED:
        return
    first = filter_config(filter_type, model).SerializeToString(deterministic=True)
    again = filter_config(filter_type, parse_config(filter_type, config))
    assert again.SerializeToString(deterministic=True) == first


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_overrides_are_refused_cleanly_or_translate(data: st.DataObject) -> None:
    filter_type = data.draw(st.sampled_from(sorted(GOOD_OVERRIDES)))
    override = data.draw(mutated(GOOD_OVERRIDES[filter_type]))
    try:
        model = parse_override(filter_type, override)
    except REFUSED:
        return
    if model is not None:
        override_config(filter_type, model).SerializeToString(deterministic=True)


def test_every_filter_type_has_good_examples_here() -> None:
    assert set(GOOD_CONFIGS) == set(SPECS)
    assert set(GOOD_OVERRIDES) == {t for t, s in SPECS.items() if s.override is not None}
    for t, configs in GOOD_CONFIGS.items():
        for c in configs:
            parse_config(t, copy.deepcopy(c))  # the seeds themselves are valid
    for t, overrides in GOOD_OVERRIDES.items():
        for o in overrides:
            assert parse_override(t, copy.deepcopy(o)) is not None
