"""`header_mutation` -> envoy.extensions.filters.http.header_mutation.v3 (HeaderMutation, and
HeaderMutationPerRoute for per-scope overrides)."""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2 as hm_pb2

from flowplane.domain.filters import FilterModel
from flowplane.domain.filters.header_mutation import HeaderMutationConfig, HeaderToAdd

TYPE = "header_mutation"

_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _add(h: HeaderToAdd) -> mutation_rules_pb2.HeaderMutation:
    return mutation_rules_pb2.HeaderMutation(
        append=base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=h.name, value=h.value),
            append_action=_APPEND if h.append else _OVERWRITE,
        )
    )


def _mutations(c: HeaderMutationConfig) -> hm_pb2.Mutations:
    # Removals first, then additions: "remove x, add x" replaces x.
    return hm_pb2.Mutations(
        request_mutations=[mutation_rules_pb2.HeaderMutation(remove=n)
                           for n in c.request_headers_to_remove]
        + [_add(h) for h in c.request_headers_to_add],
        response_mutations=[mutation_rules_pb2.HeaderMutation(remove=n)
                            for n in c.response_headers_to_remove]
        + [_add(h) for h in c.response_headers_to_add],
    )  # fmt: skip


def config_to_proto(config: FilterModel) -> hm_pb2.HeaderMutation:
    assert isinstance(config, HeaderMutationConfig)
    return hm_pb2.HeaderMutation(mutations=_mutations(config))


def override_to_proto(override: FilterModel) -> hm_pb2.HeaderMutationPerRoute:
    assert isinstance(override, HeaderMutationConfig)
    return hm_pb2.HeaderMutationPerRoute(mutations=_mutations(override))
