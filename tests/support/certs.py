"""The tests' one certificate factory: CAs and the certificates they sign, as PEM files.

Every TLS test (DNS over TLS and HTTPS, the tcp and http checks, the web server's TLS, client
certificates, the x509 codec) gets its certificates here, made in-process with `cryptography`
on P-256 keys: a CA, a leaf for given names and addresses, valid for as long as the test says
(from the past, so expired, or from the future, so not yet valid), and its files written to a
directory of the test's own. The extensions are those Python 3.13's strict verification
(VERIFY_X509_STRICT) insists on: key identifiers, key usages, and basic constraints.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)
# How long a leaf lives unless a test says otherwise (tests of expiry metrics rely on it).
LEAF_DAYS = 2
USAGES = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its key as PEM files, and the CA certificate and key that signed it."""

    cert: Path
    key: Path
    ca: Path
    ca_key: Path

    def self_signed(self) -> CertFiles:
        """The CA's own files: a self-signed certificate no client trusts by default."""
        return CertFiles(self.ca, self.ca_key, self.ca, self.ca_key)


def now() -> datetime.datetime:
    """The current time to the second, as certificates hold it."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


class Authority:
    """A CA in memory: its key, and its certificate valid from `starts` to `ends`, self-signed,
    or for an intermediate CA, signed by `parent`."""

    def __init__(self, name: str = "netsentry test CA", *,
                 starts: datetime.datetime | None = None, ends: datetime.datetime | None = None,
                 serial: int | None = None, parent: Authority | None = None) -> None:
        starts = now() - 10 * DAY if starts is None else starts
        ends = starts + 20 * DAY if ends is None else ends
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        public = self.key.public_key()
        signer = self if parent is None else parent
        builder = (
            _builder(self.name, signer.name, public, starts, ends, serial)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))
        if parent is not None:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                parent.key.public_key()), critical=False)
        self.certificate = builder.sign(signer.key, hashes.SHA256())
        # The self-signed CA a client trusts, and the intermediates a server sends after its leaf.
        self.root: Authority = self if parent is None else parent.root
        self.intermediates: list[x509.Certificate] = (
            [] if parent is None else [self.certificate, *parent.intermediates])

    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def issue(self, directory: Path, subject: str, ips: Sequence[str] = (), *,
              usage: str = "server", starts: datetime.datetime | None = None,
              days: float = LEAF_DAYS, stem: str = "leaf") -> CertFiles:
        """A leaf for `subject` (its CN, and for a server its DNS name) and `ips`, valid for
        `days` from `starts` (now); written with the CA's files to `directory` (for an
        intermediate CA: the root's, and the leaf's file followed by the intermediates)."""
        starts = now() if starts is None else starts
        key = ec.generate_private_key(ec.SECP256R1())
        alt_names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip))
                                             for ip in ips]
        if usage == "server":
            alt_names.insert(0, x509.DNSName(subject))
        builder = (
            _builder(_name(subject), self.name, key.public_key(), starts,
                     starts + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([USAGES[usage]]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False))
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names),
                                            critical=False)
        leaf = builder.sign(self.key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        files = CertFiles(directory / f"{stem}.pem", directory / f"{stem}.key",
                          directory / "ca.pem", directory / "ca.key")
        _write(files.ca, files.ca_key, self.root.certificate, self.root.key)
        _write(files.cert, files.key, leaf, key, self.intermediates)
        return files


def make_cert(tmp_path: Path, hostname: str = "dns.test", ips: Sequence[str] = ()) -> CertFiles:
    """A CA of its own and a server certificate for `hostname` and `ips`, valid from now for
    LEAF_DAYS; in a directory per hostname, so that two calls keep their own CAs."""
    return Authority().issue(Path(tmp_path) / f"certs-{hostname}", hostname, ips)


def make_expired_cert(tmp_path: Path, hostname: str) -> CertFiles:
    """A CA (valid) and a server certificate for `hostname` that expired yesterday."""
    return Authority("netsentry expired test CA").issue(
        Path(tmp_path) / f"expired-{hostname}", hostname, starts=now() - 5 * DAY, days=4)


def make_chained_cert(tmp_path: Path, hostname: str) -> tuple[CertFiles, float]:
    """A root CA, an intermediate it signs, and a server certificate for `hostname` the
    intermediate signs, valid for 100 days; the certificate's file holds the leaf and the
    intermediate, which expires 50 days before the leaf (when, as a timestamp, is returned)."""
    root = Authority("netsentry test root CA", ends=now() + 200 * DAY)
    intermediate = Authority("netsentry test intermediate CA", parent=root,
                             starts=now() - DAY, ends=now() + 50 * DAY)
    files = intermediate.issue(Path(tmp_path) / f"chained-{hostname}", hostname, days=100)
    return files, intermediate.certificate.not_valid_after_utc.timestamp()


def make_client_cert(directory: Path, name: str = "prometheus") -> CertFiles:
    """A CA of its own and a client certificate (extendedKeyUsage clientAuth) for `name`."""
    return Authority("netsentry client CA").issue(directory, name, usage="client",
                                                  stem="client")


def server_context(files: CertFiles) -> ssl.SSLContext:
    """A TLS server context presenting `files`' certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey,
             starts: datetime.datetime, ends: datetime.datetime,
             serial: int | None = None) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public).serial_number(serial or x509.random_serial_number())
            .not_valid_before(starts).not_valid_after(ends))


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


def _write(cert_path: Path, key_path: Path, certificate: x509.Certificate,
           key: ec.EllipticCurvePrivateKey, chain: Sequence[x509.Certificate] = ()) -> None:
    cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                   for c in (certificate, *chain)))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
