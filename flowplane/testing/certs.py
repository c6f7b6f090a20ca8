"""A throw-away PKI for TLS and mTLS tests, written as PEM files to a directory.

    pki = make_pki(tmp_path / "pki", teams=("a", "b"))
    pki.ca_cert                   # the CA certificate (trust anchor for clients and server)
    pki.server_cert, pki.server_key   # for 127.0.0.1 and localhost (serverAuth)
    pki.client("a").cert, .key    # URI SAN spiffe://flowplane.test/team/a (clientAuth)
    pki.issue_client("odd", uris=("spiffe://flowplane.test/ops",))   # any other client

Keys are ECDSA P-256 (fast to make); certificates carry subject/authority key identifiers and
the basic constraints and key usages OpenSSL and BoringSSL (Envoy) insist on. Not for
production: the CA key is kept in memory and written unprotected next to the certificates.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_TRUST_DOMAIN", "CertPair", "Pki", "make_pki", "spiffe_team_uri"]

DEFAULT_TRUST_DOMAIN = "flowplane.test"
_VALIDITY = timedelta(days=2)
_BACKDATE = timedelta(minutes=5)  # tolerate small clock differences between processes


def spiffe_team_uri(team: str, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
    """The URI SAN Flowplane's xDS server reads a data plane's team from."""
    return f"spiffe://{trust_domain}/team/{team}"


@dataclass(frozen=True, slots=True)
class CertPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(slots=True)
class Pki:
    """A CA and the certificates it issued; see `make_pki`."""

    directory: Path
    trust_domain: str
    ca_cert: Path
    ca_key_file: Path
    server: CertPair
    clients: dict[str, CertPair] = field(default_factory=dict)
    _ca_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)
    _ca: x509.Certificate | None = field(default=None, repr=False)

    @property
    def server_cert(self) -> Path:
        return self.server.cert

    @property
    def server_key(self) -> Path:
        return self.server.key

    def client(self, team: str) -> CertPair:
        """The client certificate of `team` (issued on first use)."""
        pair = self.clients.get(team)
        if pair is None:
            pair = self.issue_client(
                f"team-{team}", uris=(spiffe_team_uri(team, self.trust_domain),)
            )
            self.clients[team] = pair
        return pair

    def issue_client(self, name: str, *, uris: Iterable[str] = ()) -> CertPair:
        """A client certificate (clientAuth) with common name `name` and the given URI SANs,
        written as `<name>.pem` / `<name>-key.pem`."""
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        return self._issue(name, sans, ExtendedKeyUsageOID.CLIENT_AUTH)

    def issue_server(self, name: str, hosts: Iterable[str]) -> CertPair:
        """A server certificate (serverAuth) for `hosts` (IP addresses or DNS names)."""
        return self._issue(name, [_host_san(h) for h in hosts], ExtendedKeyUsageOID.SERVER_AUTH)

    def _issue(
        self, name: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier
    ) -> CertPair:
        assert self._ca is not None
        assert self._ca_key is not None
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        return _write(self.directory, name, cert, key)


def make_pki(
    directory: Path,
    *,
    teams: Iterable[str] = (),
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    server_hosts: Iterable[str] = ("127.0.0.1", "localhost"),
) -> Pki:
    """Create `directory` with `ca.pem` (+ `ca-key.pem`), `server.pem`/`server-key.pem` for
    `server_hosts`, and a client certificate per team (`team-<team>.pem`/`-key.pem`, URI SAN
    `spiffe://<trust_domain>/team/<team>`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowplane test CA")])
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pair = _write(directory, "ca", ca, ca_key)
    pki = Pki(
        directory=directory,
        trust_domain=trust_domain,
        ca_cert=ca_pair.cert,
        ca_key_file=ca_pair.key,
        server=CertPair(Path(), Path()),
        _ca_key=ca_key,
        _ca=ca,
    )
    pki.server = pki.issue_server("server", server_hosts)
    for team in teams:
        pki.client(team)
    return pki


def _host_san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> CertPair:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return CertPair(cert_path, key_path)
