"""The certificate-validity reader: real certificates, every prefix, random bytes, odd times."""

from __future__ import annotations

import contextlib
import ssl
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.codecs.x509 import Validity, X509Error, validity
from tests.support.certs import make_cert, make_expired_cert


def der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_a_certificate_from_the_factory(tmp_path: Path) -> None:
    got = validity(der(make_cert(tmp_path, "svc.test").cert))
    assert got.not_before <= time.time() < got.not_after
    assert got.not_after - got.not_before == 2 * 86400  # make_cert: two days from now


def test_an_expired_certificate(tmp_path: Path) -> None:
    assert validity(der(make_expired_cert(tmp_path, "svc.test").cert)).not_after < time.time()


def test_every_prefix_is_refused(tmp_path: Path) -> None:
    data = der(make_cert(tmp_path, "svc.test").cert)
    for size in range(len(data) // 3):  # the validity lies well within the first third
        with pytest.raises(X509Error):
            validity(data[:size])


def _validity_der(before: bytes, after: bytes) -> bytes:
    def tlv(tag: int, value: bytes) -> bytes:
        return bytes([tag, len(value)]) + value

    tbs = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x30, b"") + tlv(0x30, b"")
              + tlv(0x30, before + after))
    return tlv(0x30, tbs)


@pytest.mark.parametrize(
    ("after", "year"),
    [(b"\x17\x0d491231235959Z", 2049), (b"\x17\x0d500101000000Z", 1950),
     (b"\x18\x0f20991231235959Z", 2099)],
)
def test_utctime_centuries_and_generalized_time(after: bytes, year: int) -> None:
    got = validity(_validity_der(b"\x17\x0d000101000000Z", after))
    assert time.gmtime(got.not_after).tm_year == year
    assert got == Validity(946684800.0, got.not_after)


@pytest.mark.parametrize("bad", [b"\x17\x0d991332000000Z", b"\x17\x0bYYMMDDHHMMZ",
                                 b"\x18\x0d991231235959Z", b"\x04\x0d991231235959Z"])
def test_bad_times(bad: bytes) -> None:
    with pytest.raises(X509Error):
        validity(_validity_der(b"\x17\x0d000101000000Z", bad))


@given(st.binary(max_size=400))
def test_random_bytes_give_a_validity_or_the_codec_error(data: bytes) -> None:
    with contextlib.suppress(X509Error):  # anything else escaping fails the test
        validity(data)
