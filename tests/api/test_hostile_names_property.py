"""Property (issue 11, item 5): a name, team or host with a control character or any non-ASCII
character anywhere in it — including the final newline that a `^...$` pattern lets through — is
a 400 naming the field, never a 500, and nothing is stored, audited or published."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flowplane.app import Core
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from tests.platform.helpers import api_body

N = "/api/v1/native"
P = "/api/v1/platform"

# Each target: (path, body with the value placed, the field the 400 must name, a valid value)
Target = tuple[str, Callable[[str], dict[str, Any]], str, str]


def _cluster_host(host: str) -> dict[str, Any]:
    body = cluster_body("hosted", 8080)
    body["endpoints"][0]["host"] = host
    return body


TARGETS: dict[str, Target] = {
    "cluster name": (f"{N}/clusters", lambda v: cluster_body(v, 8080), "name", "backend"),
    "cluster team": (f"{N}/clusters", lambda v: cluster_body("c", 8080, team=v), "team", "team-a"),
    "endpoint host": (f"{N}/clusters", _cluster_host, "endpoints[0].host", "pets.example.com"),
    "endpoint ip": (f"{N}/clusters", _cluster_host, "endpoints[0].host", "fe80::1"),
    "route config name": (f"{N}/route-configs", lambda v: route_config_body(v), "name", "routes"),
    "listener name": (f"{N}/listeners", lambda v: listener_body(v), "name", "edge"),
    "listener address": (f"{N}/listeners", lambda v: listener_body(address=v), "address",
                         "127.0.0.1"),
    "team": ("/api/v1/teams", lambda v: {"name": v}, "name", "payments"),
    "api name": (f"{P}/apis", lambda v: api_body(name=v), "name", "petstore"),
    "api domain": (f"{P}/apis", lambda v: api_body(domain=v), "domain", "petstore.example.com"),
}  # fmt: skip

# control characters (C0, DEL, C1 such as NEL U+0085) and any non-ASCII character; no lone
# surrogates (they cannot be encoded as UTF-8 JSON)
bad_chars = st.one_of(
    st.characters(categories=["Cc"]),
    st.characters(min_codepoint=0x80, exclude_categories=["Cs"]),
)


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, str]:
    target = draw(st.sampled_from(sorted(TARGETS)))
    valid = TARGETS[target][3]
    bad = draw(st.text(bad_chars, min_size=1, max_size=3))
    at = draw(st.integers(0, len(valid)))
    return target, valid[:at] + bad + valid[at:]


async def test_control_and_unicode_characters_are_a_400_naming_the_field(
    client: httpx.AsyncClient, core: Core
) -> None:
    assert (await client.post("/api/v1/teams", json={"name": "team-a"})).status_code == 201

    async def stored() -> tuple[int, int, int]:
        rows = len(await core.repo.load_all())
        teams = (await client.get("/api/v1/teams")).json()["total"]
        audit = (await client.get("/api/v1/audit", params={"limit": 1000})).json()["total"]
        return rows, teams, audit

    before = await stored()

    async def check(target: str, value: str) -> None:
        path, make, field, _ = TARGETS[target]
        r = await client.post(path, json=make(value))
        assert r.status_code == 400, (target, value, r.text)
        body = r.json()
        assert body["error"] == "bad_request"
        assert field in {d["field"] for d in body["details"]}, (target, value, body)
        assert await stored() == before, (target, value)

    # the probe's own cases: a final newline after an otherwise valid value
    for target, (_, _, _, valid) in TARGETS.items():
        await check(target, valid + "\n")

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=hostile())
    @example(case=("endpoint ip", "fe80::1%eth0\n"))  # ipaddress parses anything as a zone
    @example(case=("cluster team", "team-a\n"))
    def property_(case: tuple[str, str]) -> None:
        trio.from_thread.run(check, *case)

    await trio.to_thread.run_sync(property_)
