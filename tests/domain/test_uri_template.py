"""URI templates are checked by Envoy's own rules (flowplane.domain.uri_template): a table of
templates with our verdict, and the same table put to Envoy (`envoy --mode validate`), which must
agree on every row."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.extensions.path.rewrite.uri_template.v3 import uri_template_rewrite_pb2
from google.protobuf.json_format import MessageToDict

from flowplane.domain.uri_template import check_rewrite, match_variables
from flowplane.testing.envoy import EnvoyError, validate_bootstrap
from flowplane.xds.types import (
    HTTP_CONNECTION_MANAGER,
    URI_TEMPLATE_MATCH,
    URI_TEMPLATE_REWRITE,
    pack,
)

# (template, its variables; None: refused)
MATCH: list[tuple[str, list[str] | None]] = [
    ("/", []),
    ("/a", []),
    ("/a/", []),
    ("/a/{id}", ["id"]),
    ("/a/{id}/", ["id"]),
    ("/{a}/{b}/{c}/{d}/{e}", ["a", "b", "c", "d", "e"]),
    ("/a/*", []),
    ("/a/*/", []),
    ("/a/**", []),
    ("/**/a", []),  # text after '**' is allowed; only globs and variables are not
    ("/{p=**}", ["p"]),
    ("/{v=a/*}/b", ["v"]),
    ("/{v=x/*}y/z", ["v"]),
    ("/{a=*/x}", ["a"]),
    ("/{a=x/**}", ["a"]),
    ("/{a=x*y}", ["a"]),
    ("/{a=x**}", ["a"]),
    ("/{a=**}/b", ["a"]),
    ("/{a=*}x/b", ["a"]),
    ("/{a=**}x", ["a"]),
    ("/a/{file}.txt", ["file"]),
    ("/x{a}y", ["a"]),  # text around a variable, in one segment
    ("/a{b}c/d", ["b"]),
    ("/{a}x/b", ["a"]),
    ("/{a}.b/c", ["a"]),
    ("/{a}*", ["a"]),
    ("/**.m3u8", []),
    ("/**a", []),
    ("/a/**.b", []),
    ("/*a", []),
    ("/a*", []),  # '*' after text is text
    ("/a*b", []),
    ("/a*b*c", []),
    ("/a*b/c", []),
    ("/a*/c", []),
    ("/x*/y", []),
    ("/x**", []),
    ("/x**/y", []),
    ("/{id=*}", ["id"]),
    ("/a:b@c=d,e;f+g!h$i&j'k(l)m~n%20", []),
    ("/{abcdefghijklmnop}", ["abcdefghijklmnop"]),  # 16 characters
    ("/{A_1}", ["A_1"]),
    ("a", None),  # not absolute
    ("//a", None),  # empty segment
    ("/a//b", None),
    ("/a b", None),
    ("/{id", None),
    ("/a{b", None),
    ("/a}", None),
    ("/{1d}", None),  # a variable name starts with a letter
    ("/{a-b}", None),
    ("/x{a-b}", None),
    ("/x{1}", None),
    ("/{}", None),
    ("/{a}{b}", None),  # one variable per segment
    ("/{a}{b=*}", None),
    ("/{a}x{b}", None),
    ("/a{b}c{d}", None),
    ("/*{a}", None),  # a variable comes before a glob
    ("/a/*b/c", None),  # text after a glob ends the template
    ("/*x/", None),
    ("/{a}/{b}/{c}/{d}/{e}/{f}", None),  # at most 5 variables
    ("/{abcdefghijklmnopq}", None),  # 17 characters
    ("/{a}/{a}", None),
    ("/x{a}y/{a}", None),
    ("/**/*", None),  # nothing that matches after '**'
    ("/**/{a}", None),
    ("/{a=**}/{b}", None),
    ("/{a=**}/*", None),
    ("/{a=}", None),
    ("/{a=b//c}", None),
    ("/{a=b/}", None),
    ("/{a=/x}", None),
    ("/{a=*.c}", None),
    ("/{a=*x}", None),
    ("/{a=**x}", None),
    ("/a?b", None),
    ("/a#b", None),
    ("/a^b", None),
    ("/a|b", None),
    ('/a"b', None),
    ("/a[b]", None),
    ("/a<b>", None),
    ("/a\\b", None),
    ("/a`b", None),
]
# (rewrite, against the match template "/{a}/{b}", valid?)
REWRITE: list[tuple[str, bool]] = [
    ("/", True),
    ("/x/{a}", True),
    ("/{b}/{a}", True),
    ("/{a}-{b}", True),
    ("/x{a}y/z", True),
    ("x", False),
    ("/a//{a}", False),
    ("/{a", False),
    ("/{1}", False),
    ("/a b", False),
    ("/{c}", False),  # not captured by the match template
    ("/{a}?q", False),
]


@pytest.mark.parametrize(("template", "expected"), MATCH)
def test_match_templates(template: str, expected: list[str] | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):  # noqa: PT011 -- the message is checked below, by kind
            match_variables(template)
    else:
        assert match_variables(template) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("/{a}/{b}/{c}/{d}/{e}/{f}", "at most 5 variables"),
        ("/{abcdefghijklmnopq}", "longer than 16"),
        ("/{a-b}", "invalid variable name 'a-b'"),
        ("/a//b", "no empty segment"),
        ("/*{a}", "a variable comes before"),
        ("/a/*b/c", "ends the template"),
        ("/{a}x{b}", "at most one variable"),
        ("/**/*", r"follow '\*\*'"),
        ("/{a}/{a}", "twice"),
        ("/a b", "no spaces"),
    ],
)
def test_match_template_messages_say_why(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        match_variables(template)


@pytest.mark.parametrize(("rewrite", "valid"), REWRITE)
def test_rewrite_templates(rewrite: str, valid: bool) -> None:
    if valid:
        check_rewrite(rewrite, ["a", "b"])
    else:
        with pytest.raises(ValueError):  # noqa: PT011
            check_rewrite(rewrite, ["a", "b"])


def _bootstrap(routes: list[tuple[str, str | None]]) -> bootstrap_pb2.Bootstrap:
    """A listener whose inline route config has one route per (template, rewrite)."""
    boot = bootstrap_pb2.Bootstrap()
    boot.node.id, boot.node.cluster = "validate", "validate"
    cluster = boot.static_resources.clusters.add(name="c")
    cluster.connect_timeout.FromSeconds(1)
    vh = rc_pb2.VirtualHost(name="vh", domains=["*"])
    for template, rewrite in routes:
        route = vh.routes.add()
        route.match.path_match_policy.CopyFrom(
            extension_pb2.TypedExtensionConfig(
                name=URI_TEMPLATE_MATCH,
                typed_config=pack(
                    uri_template_match_pb2.UriTemplateMatchConfig(path_template=template)
                ),
            )
        )
        route.route.cluster = "c"
        if rewrite is not None:
            route.route.path_rewrite_policy.CopyFrom(
                extension_pb2.TypedExtensionConfig(
                    name=URI_TEMPLATE_REWRITE,
                    typed_config=pack(
                        uri_template_rewrite_pb2.UriTemplateRewriteConfig(
                            path_template_rewrite=rewrite
                        )
                    ),
                )
            )
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="t")
    hcm.route_config.virtual_hosts.append(vh)
    hcm.http_filters.add(name="envoy.filters.http.router").typed_config.CopyFrom(
        pack(router_pb2.Router())
    )
    listener = boot.static_resources.listeners.add(name="l")
    listener.address.socket_address.address = "127.0.0.1"
    listener.address.socket_address.port_value = 10000
    chain = listener.filter_chains.add()
    chain.filters.add(name=HTTP_CONNECTION_MANAGER).typed_config.CopyFrom(pack(hcm))
    return boot


async def _envoy_accepts(tmp_path: Path, routes: list[tuple[str, str | None]]) -> bool:
    try:
        await validate_bootstrap(MessageToDict(_bootstrap(routes)), tmp_dir=tmp_path)
    except EnvoyError:
        return False
    return True


@pytest.mark.e2e
async def test_envoy_agrees_on_every_row(tmp_path: Path) -> None:
    with trio.fail_after(120):
        valid = [(t, None) for t, v in MATCH if v is not None]
        valid += [("/{a}/{b}", r) for r, ok in REWRITE if ok]
        assert await _envoy_accepts(tmp_path, valid)  # all at once
        disagree = [
            row
            for row in [(t, None) for t, v in MATCH if v is None]
            + [("/{a}/{b}", r) for r, ok in REWRITE if not ok]
            if await _envoy_accepts(tmp_path, [row])
        ]
        assert not disagree, f"Envoy accepts what we refuse: {disagree}"
