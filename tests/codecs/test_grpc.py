"""The gRPC health codec, held against the protobuf messages grpcio-health-checking generates:
what we encode they parse, what they serialize we decode (unknown fields too), and malformed
bytes and frames are refused with a codec error, never another exception."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2
from hypothesis import given
from hypothesis import strategies as st

from exporter.codecs import grpc as codec
from exporter.codecs.grpc import GrpcCodecError


@given(st.text())
def test_request_parses_as_protobuf(service: str) -> None:
    parsed = health_pb2.HealthCheckRequest.FromString(codec.encode_request(service))
    assert parsed.service == service
    assert codec.encode_request(service) == health_pb2.HealthCheckRequest(
        service=service).SerializeToString()


def test_long_service_name_has_a_multibyte_length() -> None:
    data = codec.encode_request("s" * 300)
    assert data[:3] == b"\x0a\xac\x02"
    assert health_pb2.HealthCheckRequest.FromString(data).service == "s" * 300


@pytest.mark.parametrize("status", [0, 1, 2, 3])
def test_response_status_from_protobuf(status: int) -> None:
    data = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    assert codec.decode_response(data) == status
    assert codec.SERVING_STATUSES[status] == health_pb2.HealthCheckResponse.ServingStatus.Name(
        status)


def test_unknown_fields_are_skipped() -> None:
    # field 2 varint, field 3 fixed64, field 4 bytes, field 5 fixed32, then status = 2
    data = (b"\x10\x96\x01" + b"\x19" + bytes(8) + b"\x22\x03abc" + b"\x2d" + bytes(4)
            + b"\x08\x02")
    assert codec.decode_response(data) == 2
    parsed = health_pb2.HealthCheckResponse.FromString(data)
    assert parsed.status == 2


def test_last_status_wins_as_in_protobuf() -> None:
    data = b"\x08\x01\x08\x02"
    assert codec.decode_response(data) == health_pb2.HealthCheckResponse.FromString(data).status


@pytest.mark.parametrize("data, words", [
    (b"\x08", "inside a varint"),
    (b"\x08\xff", "inside a varint"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "longer than"),
    (b"\x22\x05ab", "past the end"),
    (b"\x19\x00", "past the end"),
    (b"\x0b", "wire type 3"),
    (b"\x0e", "wire type 6"),
    (b"\x00\x01", "field number 0"),
    (b"\x0a\x01x", "not a varint"),
])
def test_malformed_responses_are_codec_errors(data: bytes, words: str) -> None:
    with pytest.raises(GrpcCodecError, match=words):
        codec.decode_response(data)


@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    try:
        status = codec.decode_response(data)
    except GrpcCodecError:
        return
    assert isinstance(status, int)


def test_frame_round_trip() -> None:
    message = health_pb2.HealthCheckResponse(status=1).SerializeToString()
    body = codec.frame(message) + codec.frame(b"")
    assert body[:5] == b"\x00\x00\x00\x00\x02"
    assert codec.unframe(body) == [message, b""]
    assert codec.unframe(b"") == []


@pytest.mark.parametrize("body, words", [
    (b"\x00\x00\x00", "inside a message prefix"),
    (b"\x01\x00\x00\x00\x02\x08\x01", "compressed message"),
    (b"\x07\x00\x00\x00\x00", "compressed flag 7"),
    (b"\x00\x00\x00\x00\x05\x08\x01", "truncated"),
    (b"\x00\x00\x01\x00\x00", "65536 bytes"),
    (b"\x00\xff\xff\xff\xff", "4294967295 bytes"),
])
def test_bad_frames_are_codec_errors(body: bytes, words: str) -> None:
    with pytest.raises(GrpcCodecError, match=words):
        codec.unframe(body)


def test_status_names() -> None:
    assert codec.status_name(0) == "OK"
    assert codec.status_name(5) == "NOT_FOUND"
    assert codec.status_name(16) == "UNAUTHENTICATED"
    assert codec.status_name(99) == "status 99"
    assert len(codec.STATUS_CODES) == 17


def test_grpc_message_percent_decoding() -> None:
    assert codec.decode_message("unknown%20service") == "unknown service"
    assert codec.decode_message("caf%C3%A9 100%25") == "café 100%"
    assert codec.decode_message("bad %FF byte") == "bad \ufffd byte"
    assert codec.decode_message("plain") == "plain"
