"""Runs the start-up upgrade of the next release (`upgrade_model`) against a database, in its
own process, so a test can kill it midway:

    python -m tests.storage.upgrade_driver URL [SECONDS]
    python -m tests.storage.upgrade_driver cli ARGS...

With SECONDS, the upgrade prints "upgrading" at its second document and then takes SECONDS
over it (the test SIGKILLs it then); without, it upgrades at full speed and exits 0. `cli`
runs the `flowplane` command with ARGS as that release.
"""

from __future__ import annotations

import logging
import sys

import trio
import trio_asyncio

from flowplane.services.upgrade import upgrade_documents
from flowplane.storage import open_repository
from tests.storage import upgrade_model


async def main(url: str) -> None:
    async with trio_asyncio.open_loop():
        repo = await open_repository(url)
        try:
            await repo.migrate()
            changes = await upgrade_documents(repo)
        finally:
            await repo.aclose()
    print(f"upgraded {len(changes)}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    args = sys.argv[1:]
    if args[0] == "cli":
        from flowplane.cli.main import main as cli

        upgrade_model.install()
        sys.exit(cli(args[1:]))
    step = (
        upgrade_model.slow(float(args[1])) if len(args) > 1 else upgrade_model.rename
    )
    upgrade_model.install(step)
    trio.run(main, args[0])
