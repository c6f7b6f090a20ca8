"""`python -m flowplane.cli.healthcheck`: exit 0 if this host's Flowplane answers `GET /readyz`
with 200, else 1 (the container image's HEALTHCHECK; the image has no curl).

It asks 127.0.0.1 on the port of FLOWPLANE_API_ADDRESS, over HTTPS when FLOWPLANE_API_TLS_CERT
is set (the certificate is not verified: the point is readiness, on loopback). It reads the
environment itself, without loading every setting, so a probe stays cheap.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request


def probe(timeout: float = 3.0) -> int:
    port = os.environ.get("FLOWPLANE_API_ADDRESS", "127.0.0.1:8080").rpartition(":")[2]
    tls = bool(os.environ.get("FLOWPLANE_API_TLS_CERT"))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/readyz"
    context = None
    if tls:  # readiness on loopback, not identity: the certificate is not checked
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as err:
        print(f"flowplane healthcheck: {url}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(probe())
