"""The cookbooks (docs/cookbooks/*.md) run as written: every block marked `<!-- doctest -->`
runs against one real `flowplane serve` (default settings) and one real Envoy for this module,
set up by the cookbooks' README block; each page's output is checked against what the page says
(the `# ->` comments), so the examples cannot rot."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.docs.harness import ROOT, DocShell, doctest_blocks

pytestmark = pytest.mark.e2e

BOOK = ROOT / "docs" / "cookbooks"


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocShell]:
    with DocShell(tmp_path_factory.mktemp("cookbooks")) as sh:
        sh.serve()
        (setup,) = doctest_blocks((BOOK / "README.md").read_text())
        sh.run([setup])
        yield sh


def run_page(shell: DocShell, page: str) -> list[str]:
    blocks = doctest_blocks((BOOK / page).read_text())
    assert len(blocks) >= 3, f"{page}: fewer tested blocks than expected"
    return shell.run(["TOKEN=<the admin token>\n", *blocks])[1:]


def lines(out: str) -> list[str]:
    return [" ".join(ln.split()) for ln in out.strip().splitlines()]


def test_clusters(shell: DocShell) -> None:
    _, rr, breakers, dns, delete = run_page(shell, "clusters.md")
    assert lines(rr) == ["201", "201", "201", "2 blue", "2 green"]
    assert lines(breakers) == ["200", "2 200", "200"]
    assert lines(dns) == ["200", "3 green"]
    refused, deleted = delete.strip().splitlines()
    assert re.search(r'"error":\s*"conflict".*still referenced', refused), refused
    assert deleted == "204 204 204"


def test_routes(shell: DocShell) -> None:
    _, matches, direct, weighted, cleanup = run_page(shell, "routes.md")
    assert lines(matches) == ["201 201", "201", "201", "blue", "green", "green", "404", "404"]
    assert lines(direct) == ["200", "pong", "301 http://shop.local/new"]
    assert lines(weighted) == ["200", "4 green"]
    assert lines(cleanup) == ["204 204 204 204"]


def test_listeners(shell: DocShell) -> None:
    _, inline, tcp, nack = run_page(shell, "listeners.md")
    assert lines(inline) == ["201", "201", "blue"]
    assert lines(tcp) == ["201", "blue"]
    assert lines(nack) == ["201", "elsewhere rejected: True", "204 204 204 204"]
    # the access log, on Envoy's stdout (Envoy flushes access logs about once a second)
    deadline = time.monotonic() + 10
    while "GET / 200" not in (log := (shell.work / "envoy.log").read_text()):
        assert time.monotonic() < deadline, log
        time.sleep(0.1)


def test_filters(shell: DocShell) -> None:
    _, gateway, disabled, custom = run_page(shell, "filters.md")
    assert lines(gateway) == [
        "201", "201", "201", "flowplane",
        '200 200 429 {"error": "slow down"}', "200 200 200",
        "https://app.example",
    ]  # fmt: skip
    assert lines(disabled) == ["200", "[]", "[flowplane]"]
    assert lines(custom) == ["200", "501 413", "204 204 204"]
