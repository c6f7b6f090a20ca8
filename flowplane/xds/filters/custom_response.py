"""`custom_response` -> envoy.extensions.filters.http.custom_response.v3.CustomResponse (also the
per-scope override): a matcher list over the response status code
(envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput), one matcher per rule in order (the first
match wins), each acting with a LocalResponsePolicy."""

from __future__ import annotations

from itertools import groupby

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.custom_response.v3 import custom_response_pb2
from envoy.extensions.http.custom_response.local_response_policy.v3 import (
    local_response_policy_pb2 as lrp_pb2,
)
from envoy.type.matcher.v3 import status_code_input_pb2
from xds.core.v3 import extension_pb2
from xds.type.matcher.v3 import matcher_pb2, regex_pb2, string_pb2

from flowplane.domain.filters import FilterModel
from flowplane.domain.filters.custom_response import CustomResponseConfig, ResponseRule
from flowplane.xds.types import pack, u32

TYPE = "custom_response"

_Matcher = matcher_pb2.Matcher
_STATUS_INPUT = extension_pb2.TypedExtensionConfig(
    name="status-code", typed_config=pack(status_code_input_pb2.HttpResponseStatusCodeMatchInput())
)


def codes_regex(codes: list[int]) -> str:
    """An RE2 regex matching exactly `codes` (sorted 3-digit numbers), compact for ranges:
    [404, 405, 410, 411, 412] -> ^(?:40[45]|41[0-2])$."""
    parts = []
    for tens, group in groupby(codes, key=lambda c: c // 10):
        digits = [c % 10 for c in group]
        lo, hi = digits[0], digits[-1]
        if len(digits) == 1:
            last = str(lo)
        elif hi - lo + 1 == len(digits):
            last = f"[{lo}-{hi}]"
        else:
            last = "[" + "".join(map(str, digits)) + "]"
        parts.append(f"{tens}{last}")
    return "^(?:" + "|".join(parts) + ")$"


def _value_match(codes: list[int]) -> string_pb2.StringMatcher:
    if len(codes) == 1:
        return string_pb2.StringMatcher(exact=str(codes[0]))
    return string_pb2.StringMatcher(
        safe_regex=regex_pb2.RegexMatcher(
            google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex=codes_regex(codes)
        )
    )


def _policy(rule: ResponseRule) -> lrp_pb2.LocalResponsePolicy:
    resp = rule.response
    out = lrp_pb2.LocalResponsePolicy()
    if resp.status is not None:
        out.status_code.CopyFrom(u32(resp.status))
    if resp.body is not None:
        out.body.CopyFrom(base_pb2.DataSource(inline_string=resp.body))
    if resp.content_type is not None:
        # A header, not body_format.content_type: the policy ignores the latter (Envoy 1.40's
        # LocalResponsePolicy sends the body as text/plain, then applies these headers).
        out.response_headers_to_add.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="content-type", value=resp.content_type),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        ))  # fmt: skip
    return out


def _matcher(rule: ResponseRule, index: int) -> matcher_pb2.Matcher.MatcherList.FieldMatcher:
    return _Matcher.MatcherList.FieldMatcher(
        predicate=_Matcher.MatcherList.Predicate(
            single_predicate=_Matcher.MatcherList.Predicate.SinglePredicate(
                input=_STATUS_INPUT, value_match=_value_match(rule.codes())
            )
        ),
        on_match=_Matcher.OnMatch(
            action=extension_pb2.TypedExtensionConfig(
                name=f"rule-{index}", typed_config=pack(_policy(rule))
            )
        ),
    )


def config_to_proto(config: FilterModel) -> custom_response_pb2.CustomResponse:
    assert isinstance(config, CustomResponseConfig)
    return custom_response_pb2.CustomResponse(
        custom_response_matcher=_Matcher(
            matcher_list=_Matcher.MatcherList(
                matchers=[_matcher(r, i) for i, r in enumerate(config.rules)]
            )
        )
    )


def override_to_proto(override: FilterModel) -> custom_response_pb2.CustomResponse:
    return config_to_proto(override)
