"""The gRPC health service's two messages and gRPC's message framing, by hand.

`grpc.health.v1.HealthCheckRequest` is one string field (`service`, field 1) and
`HealthCheckResponse` one enum (`status`, field 1): protobuf's wire format for these is a few
varints, so no code generator and no grpcio. A gRPC message on the wire is a 5-byte prefix (a
compressed flag and a big-endian length) and the message. Pure: bytes in, values out.
"""

from __future__ import annotations

import struct
from urllib.parse import unquote_to_bytes

HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"

# HealthCheckResponse.ServingStatus
SERVING_STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}

# https://grpc.github.io/grpc/core/md_doc_statuscodes.html
STATUS_CODES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}

MAX_MESSAGE = 4096  # a HealthCheckResponse is 2 bytes; anything near this is not one
_PREFIX = struct.Struct(">BI")


class GrpcCodecError(Exception):
    """Bytes that are not what the health service sends; the message is for people."""


def status_name(code: int) -> str:
    return STATUS_CODES.get(code, f"status {code}")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if at >= len(data):
            raise GrpcCodecError("the message ends inside a varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >> 64:
                raise GrpcCodecError("a varint longer than 64 bits")
            return value, at
    raise GrpcCodecError("a varint longer than 10 bytes")


def encode_request(service: str) -> bytes:
    """A HealthCheckRequest; the default (empty) service is no field at all, as protobuf does."""
    raw = service.encode("utf-8")
    return b"\x0a" + _varint(len(raw)) + raw if raw else b""


def decode_response(data: bytes) -> int:
    """The `status` of a HealthCheckResponse (the last one wins, as in protobuf; 0 when absent).
    Unknown fields are skipped by their wire type; groups and malformed input are errors."""
    status = 0
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise GrpcCodecError("field number 0")
        if wire == 0:
            value, at = _read_varint(data, at)
            if field == 1:
                status = value if value < 1 << 63 else value - (1 << 64)  # int32 enum
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        elif wire == 2:
            length, at = _read_varint(data, at)
            at += length
        else:
            raise GrpcCodecError(f"unsupported wire type {wire} (field {field})")
        if at > len(data):
            raise GrpcCodecError(f"field {field} runs past the end of the message")
        if field == 1 and wire != 0:
            raise GrpcCodecError(f"the status field has wire type {wire}, not a varint")
    return status


def frame(message: bytes) -> bytes:
    """One uncompressed length-prefixed message."""
    return _PREFIX.pack(0, len(message)) + message


def unframe(data: bytes, limit: int = MAX_MESSAGE) -> list[bytes]:
    """The messages of a response body; refuses compressed, truncated and oversized ones."""
    messages = []
    at = 0
    while at < len(data):
        if len(data) - at < _PREFIX.size:
            raise GrpcCodecError(f"the body ends inside a message prefix ({len(data) - at} "
                                 "of 5 bytes)")
        flag, length = _PREFIX.unpack_from(data, at)
        if flag == 1:
            raise GrpcCodecError("a compressed message, though none was asked for")
        if flag != 0:
            raise GrpcCodecError(f"invalid compressed flag {flag}")
        if length > limit:
            raise GrpcCodecError(f"a message of {length} bytes (at most {limit} expected)")
        at += _PREFIX.size
        if len(data) - at < length:
            raise GrpcCodecError(f"a message of {length} bytes is truncated at "
                                 f"{len(data) - at}")
        messages.append(data[at:at + length])
        at += length
    return messages


def decode_message(text: str) -> str:
    """A grpc-message header: percent-encoded UTF-8; invalid bytes replaced, never an error."""
    return unquote_to_bytes(text).decode("utf-8", "replace")
