"""TLS contexts for the REST API and the xDS server, built from the settings' files.

Bad or missing files stop start-up with a message naming the setting and the file.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from flowplane.errors import ConfigurationError
from flowplane.settings import Settings


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str, what: str) -> None:
    for setting, path in ((f"FLOWPLANE_{what}_TLS_CERT", cert), (f"FLOWPLANE_{what}_TLS_KEY", key)):
        if not Path(path).is_file():
            raise ConfigurationError(f"{setting}: no such file {path!r}")
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as err:
        raise ConfigurationError(
            f"FLOWPLANE_{what}_TLS_CERT/_KEY ({cert}, {key}) cannot be loaded: {err}"
        ) from None


def check_api_tls(settings: Settings) -> None:
    """Fail fast if the API certificate or key cannot be used (hypercorn loads them itself)."""
    if settings.api_tls_cert and settings.api_tls_key:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        _load_chain(ctx, settings.api_tls_cert, settings.api_tls_key, "API")


def xds_server_context(settings: Settings) -> ssl.SSLContext | None:
    """The xDS server's TLS context: HTTP/2 via ALPN; client certificates required when a
    client CA is configured (mTLS)."""
    if not settings.xds_tls_cert or not settings.xds_tls_key:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, settings.xds_tls_cert, settings.xds_tls_key, "XDS")
    ctx.set_alpn_protocols(["h2"])
    if settings.xds_tls_client_ca:
        if not Path(settings.xds_tls_client_ca).is_file():
            raise ConfigurationError(
                f"FLOWPLANE_XDS_TLS_CLIENT_CA: no such file {settings.xds_tls_client_ca!r}"
            )
        try:
            ctx.load_verify_locations(settings.xds_tls_client_ca)
        except (ssl.SSLError, OSError) as err:
            raise ConfigurationError(
                f"FLOWPLANE_XDS_TLS_CLIENT_CA ({settings.xds_tls_client_ca}) cannot be loaded: "
                f"{err}"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
