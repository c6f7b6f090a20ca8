"""Names unique per team: keys, reference resolution, and the model a resource is translated
from (flowplane.domain.naming; api.md Conventions: "In xDS a team's resources are named
`<team>/<name>`; shared ones keep the bare name. A reference resolves inside the referring
resource's team; a reference to a shared resource is explicit (e.g. `shared/<name>`)")."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from flowplane.domain.naming import display, resolve, split_key, xds_model, xds_name
from flowplane.domain.resources import Kind, Ref, parse_spec, references
from flowplane.xds.translate import translate_resource

JWT = {"providers": {"p": {"issuer": "https://i.test",
                           "remoteJwks": {"uri": "https://i.test/jwks", "cluster": "jwks"}}},
       "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "p"}}]}  # fmt: skip
AUTHZ = {"service": {"type": "http", "cluster": "shared/authz"}}


@pytest.mark.parametrize(
    ("team", "ref", "key"),
    [
        ("a", "backend", "a/backend"),  # inside the team
        ("a", "shared/backend", "backend"),  # explicitly shared
        ("a", "a/backend", "a/backend"),  # its own team, spelled out
        ("a", "b/backend", "b/backend"),  # another team's: planning refuses it (state.py)
        (None, "backend", "backend"),  # a shared resource: among shared ones
        (None, "shared/backend", "backend"),
        (None, "t/backend", "t/backend"),  # only the shared gateway names team clusters
    ],
)
def test_a_reference_resolves_in_the_referring_team(team: str | None, ref: str, key: str) -> None:
    assert resolve(team, ref) == key


def test_keys_round_trip_and_display_as_a_team_would_write_them() -> None:
    assert xds_name("a", "x") == "a/x" and xds_name(None, "x") == "x"
    assert split_key("a/x") == ("a", "x") and split_key("x") == (None, "x")
    assert display("a/x", "a") == "x"
    assert display("x", "a") == "shared/x"
    assert display("x", None) == "x" and display("b/x", "a") == "b/x"


def _listener(**extra: Any) -> dict[str, Any]:
    hcm = {
        "type": "httpConnectionManager",
        "inlineRouteConfig": {"virtualHosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {"path": {"type": "prefix", "value": "/w"}},
             "action": {"type": "weighted", "clusters": [{"name": "blue", "weight": 1},
                                                          {"name": "shared/green", "weight": 1}]}},
            {"match": {"path": {"type": "prefix", "value": "/"}},
             "action": {"type": "forward", "cluster": "backend"}},
        ]}]},
        "tracing": {"provider": "zipkin", "collectorCluster": "zipkin"},
        "httpFilters": [{"type": "jwt_authn", "config": JWT},
                        {"type": "ext_authz", "config": AUTHZ}],
    }  # fmt: skip
    return {"name": "edge", "address": "0.0.0.0", "port": 10000, **extra,
            "filterChains": [{"filters": [hcm]}]}  # fmt: skip


def test_every_reference_of_a_listener_is_resolved_in_its_xds_model() -> None:
    """What `references` finds in the model as written, resolved, is exactly what it finds in
    the xDS model: no reference field is missed (route actions, weighted clusters, TCP proxy,
    tracing collector, and the clusters inside HTTP filter configs)."""
    model = parse_spec(Kind.LISTENER, _listener(team="a"))
    resolved = xds_model(model, "a")
    assert references(Kind.LISTENER, resolved) == {
        Ref(r.kind, resolve("a", r.name)) for r in references(Kind.LISTENER, model)
    } == {Ref(Kind.CLUSTER, k) for k in
          ("a/blue", "green", "a/backend", "a/zipkin", "a/jwks", "authz")}  # fmt: skip
    tcp = parse_spec(Kind.LISTENER, {"name": "t", "address": "0.0.0.0", "port": 1, "team": "a",
        "filterChains": [{"filters": [{"type": "tcpProxy", "cluster": "db"}]}]})  # fmt: skip
    assert references(Kind.LISTENER, xds_model(tcp, "a")) == {Ref(Kind.CLUSTER, "a/db")}
    assert resolved.name == "a/edge"  # type: ignore[attr-defined]
    assert model.name == "edge"  # type: ignore[attr-defined]  # the stored model is untouched
    # ... and what Envoy receives names only resolved clusters
    (listener,) = [m for url, _, m in translate_resource(Kind.LISTENER, resolved)
                   if url.endswith("Listener")]  # fmt: skip
    text = str(MessageToDict(listener))
    for bare in ("'backend'", "'blue'", "'zipkin'", "'jwks'", "shared/"):
        assert bare not in text, bare


def test_a_shared_resource_without_shared_prefixes_is_its_own_xds_model() -> None:
    model = parse_spec(Kind.CLUSTER, {"name": "c", "endpoints": [{"host": "h", "port": 1}]})
    assert xds_model(model, None) is model
    rc = parse_spec(Kind.ROUTE_CONFIG, {"name": "r", "virtualHosts": [{
        "name": "v", "domains": ["*"], "routes": [{"match": {"path": {"type": "prefix",
        "value": "/"}}, "action": {"type": "forward", "cluster": "c"}}]}]})  # fmt: skip
    assert xds_model(rc, None) is rc


def test_override_keys_name_the_listener_as_a_reference() -> None:
    """A per-scope override of a filter a listener delivers over ECDS is keyed
    `<listener>/<filter>`; Envoy keys it by the listener's xDS name, so the listener part
    resolves like a reference (`edge/jwt_authn` in team a -> `a/edge/jwt_authn`)."""
    rc = parse_spec(Kind.ROUTE_CONFIG, {"name": "r", "team": "a", "virtualHosts": [{
        "name": "v", "domains": ["*"], "filters": {
            "edge/jwt_authn": {"disabled": True}, "shared/gw/cors": {"disabled": True},
            "local_rate_limit": {"disabled": True}},
        "routes": [{"match": {"path": {"type": "prefix", "value": "/"}},
                    "action": {"type": "forward", "cluster": "c"}}]}]})  # fmt: skip
    (vhost,) = xds_model(rc, "a").virtual_hosts  # type: ignore[attr-defined]
    assert sorted(vhost.filters) == ["a/edge/jwt_authn", "gw/cors", "local_rate_limit"]

