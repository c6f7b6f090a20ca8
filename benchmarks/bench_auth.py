"""Added latency of authentication + authorisation per request (in-process, no I/O).

Measures `Authenticator.authenticate` + `authorize` exactly as every /api/v1 request runs them:
the warm path (a token seen before: cached signature check, then the stored record's status,
expiry, scope and rate limit), and the cold path (first sight of a token: EdDSA verification).

    .venv/bin/python benchmarks/bench_auth.py [--iterations 20000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowplane.actors.auth import AuthState, SigningKey
from flowplane.api.auth import Authenticator
from flowplane.domain.auth import TokenRecord, token_scopes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=20000)
    n = ap.parse_args().iterations
    auth = AuthState()
    key = SigningKey.generate()
    auth.keys[key.kid] = key
    now = datetime.now(UTC)
    tokens = []
    for i in range(n):
        rec = TokenRecord(f"id-{i}", f"t{i}", "platform-engineer",
                          token_scopes("platform-engineer", None), frozenset({"a"}), "active",
                          None, None, now, now, 1)  # fmt: skip
        auth.tokens[rec.id] = rec
        tokens.append(auth.sign(rec))
    authn = Authenticator(auth, default_rate_per_minute=10**7, cache_size=n + 1)

    def timed(token: str) -> float:
        t0 = time.perf_counter_ns()
        p = authn.authenticate(f"Bearer {token}", "127.0.0.1:1")
        authn.authorize(p, "clusters:read")
        return (time.perf_counter_ns() - t0) / 1000

    cold = [timed(t) for t in tokens]  # first sight of each token: signature verified
    warm = [timed(tokens[i % 100]) for i in range(n)]  # the steady state: a few busy tokens
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.machine()} "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, {n} iterations")  # fmt: skip
    for label, xs in (("warm (token seen before)", warm), ("cold (first use: EdDSA verify)", cold)):
        xs.sort()
        print(f"{label:32s} median {statistics.median(xs):7.1f} us  "
              f"p99 {xs[int(len(xs) * 0.99)]:7.1f} us")  # fmt: skip


if __name__ == "__main__":
    main()
