"""`python -m flowplane.cli.healthcheck`: exit 0 if this host's Flowplane answers `GET /readyz`
with 200, else 1 (the container image's HEALTHCHECK; the image has no curl).

It asks 127.0.0.1 on the port of FLOWPLANE_API_ADDRESS, over HTTPS when FLOWPLANE_API_TLS_CERT
is set (the certificate is not verified: the point is readiness, on loopback).
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

from flowplane.errors import ConfigurationError
from flowplane.settings import load_settings


def probe(timeout: float = 3.0) -> int:
    try:
        settings = load_settings()
    except ConfigurationError as err:
        print(f"flowplane healthcheck: {err.message}", file=sys.stderr)
        return 1
    port = settings.api_host_port[1]
    tls = settings.api_tls_cert is not None
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
