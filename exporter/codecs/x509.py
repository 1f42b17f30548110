"""Just enough DER (ITU-T X.690) to read an X.509 certificate's validity (RFC 5280 §4.1.2.5).

Python's ssl module hands over a peer's certificate as DER, but decodes it only when it was
verified; a check with `tls_insecure_skip_verify` still wants the expiry date. This walks the
few structures on the way to `validity` and nothing else.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass

_SEQUENCE = 0x30
_EXPLICIT_VERSION = 0xA0
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18


class X509Error(Exception):
    """Bytes that are not a DER certificate we can read the validity of."""


@dataclass(frozen=True, slots=True)
class Validity:
    not_before: float  # Unix time
    not_after: float


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the element at `pos`."""
    if pos + 2 > len(data):
        raise X509Error("truncated DER element")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:  # long form: the low bits count the length's own bytes (X.690 §8.1.3.5)
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise X509Error("invalid DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise X509Error("DER element runs past the end of the certificate")
    return tag, pos, pos + length


def _time(tag: int, text: bytes) -> float:
    try:
        value = text.decode("ascii")
        if tag == _UTC_TIME and len(value) == 13 and value.endswith("Z"):
            # RFC 5280 §4.1.2.5.1: YY >= 50 is 19YY, else 20YY.
            year = int(value[:2])
            value = f"{1900 + year if year >= 50 else 2000 + year}{value[2:]}"
        elif not (tag == _GENERALIZED_TIME and len(value) == 15 and value.endswith("Z")):
            raise ValueError(value)
        fields = (int(value[0:4]), int(value[4:6]), int(value[6:8]),
                  int(value[8:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise X509Error(f"invalid certificate time {text!r}") from None
    if not (1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and fields[3] < 24
            and fields[4] < 60 and fields[5] < 61):
        raise X509Error(f"invalid certificate time {text!r}")
    return float(calendar.timegm((*fields, 0, 0, 0)))


def validity(der: bytes) -> Validity:
    """The notBefore and notAfter of a DER-encoded certificate."""
    tag, start, _ = _tlv(der, 0)  # Certificate
    if tag != _SEQUENCE:
        raise X509Error("not a DER certificate")
    tag, pos, _ = _tlv(der, start)  # tbsCertificate
    if tag != _SEQUENCE:
        raise X509Error("not a DER certificate")
    tag, _, end = _tlv(der, pos)
    if tag == _EXPLICIT_VERSION:
        pos = end
    for _ in range(3):  # serialNumber, signature, issuer
        pos = _tlv(der, pos)[2]
    tag, pos, _ = _tlv(der, pos)  # validity
    if tag != _SEQUENCE:
        raise X509Error("no validity in the certificate")
    tag, start, end = _tlv(der, pos)
    not_before = _time(tag, der[start:end])
    tag, start, end = _tlv(der, end)
    return Validity(not_before, _time(tag, der[start:end]))
