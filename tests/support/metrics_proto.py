"""client_model's metrics.proto, for the `protobuf` package's own parser: the tests decode the
agent's protobuf exposition with it, so the hand-written encoder is held to a parser nobody
here wrote. The descriptors are built from the .proto's definitions (no protoc needed): the
messages and fields of io.prometheus.client as they are in client_model today.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal.decoder import _DecodeVarint  # type: ignore[attr-defined]

F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED
MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    # name: [(field, number, label, type, message type)]
    "LabelPair": [("name", 1, OPTIONAL, F.TYPE_STRING, ""),
                  ("value", 2, OPTIONAL, F.TYPE_STRING, "")],
    "Gauge": [("value", 1, OPTIONAL, F.TYPE_DOUBLE, "")],
    "Counter": [("value", 1, OPTIONAL, F.TYPE_DOUBLE, ""),
                ("created_timestamp", 3, OPTIONAL, F.TYPE_MESSAGE, ".google.protobuf.Timestamp")],
    "Untyped": [("value", 1, OPTIONAL, F.TYPE_DOUBLE, "")],
    "Bucket": [("cumulative_count", 1, OPTIONAL, F.TYPE_UINT64, ""),
               ("cumulative_count_float", 4, OPTIONAL, F.TYPE_DOUBLE, ""),
               ("upper_bound", 2, OPTIONAL, F.TYPE_DOUBLE, "")],
    "BucketSpan": [("offset", 1, OPTIONAL, F.TYPE_SINT32, ""),
                   ("length", 2, OPTIONAL, F.TYPE_UINT32, "")],
    "Histogram": [
        ("sample_count", 1, OPTIONAL, F.TYPE_UINT64, ""),
        ("sample_count_float", 4, OPTIONAL, F.TYPE_DOUBLE, ""),
        ("sample_sum", 2, OPTIONAL, F.TYPE_DOUBLE, ""),
        ("bucket", 3, REPEATED, F.TYPE_MESSAGE, ".io.prometheus.client.Bucket"),
        ("created_timestamp", 15, OPTIONAL, F.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
        ("schema", 5, OPTIONAL, F.TYPE_SINT32, ""),
        ("zero_threshold", 6, OPTIONAL, F.TYPE_DOUBLE, ""),
        ("zero_count", 7, OPTIONAL, F.TYPE_UINT64, ""),
        ("zero_count_float", 8, OPTIONAL, F.TYPE_DOUBLE, ""),
        ("negative_span", 9, REPEATED, F.TYPE_MESSAGE, ".io.prometheus.client.BucketSpan"),
        ("negative_delta", 10, REPEATED, F.TYPE_SINT64, ""),
        ("negative_count", 11, REPEATED, F.TYPE_DOUBLE, ""),
        ("positive_span", 12, REPEATED, F.TYPE_MESSAGE, ".io.prometheus.client.BucketSpan"),
        ("positive_delta", 13, REPEATED, F.TYPE_SINT64, ""),
        ("positive_count", 14, REPEATED, F.TYPE_DOUBLE, ""),
    ],
    "Metric": [
        ("label", 1, REPEATED, F.TYPE_MESSAGE, ".io.prometheus.client.LabelPair"),
        ("gauge", 2, OPTIONAL, F.TYPE_MESSAGE, ".io.prometheus.client.Gauge"),
        ("counter", 3, OPTIONAL, F.TYPE_MESSAGE, ".io.prometheus.client.Counter"),
        ("untyped", 5, OPTIONAL, F.TYPE_MESSAGE, ".io.prometheus.client.Untyped"),
        ("histogram", 7, OPTIONAL, F.TYPE_MESSAGE, ".io.prometheus.client.Histogram"),
        ("timestamp_ms", 6, OPTIONAL, F.TYPE_INT64, ""),
    ],
    "MetricFamily": [
        ("name", 1, OPTIONAL, F.TYPE_STRING, ""),
        ("help", 2, OPTIONAL, F.TYPE_STRING, ""),
        ("type", 3, OPTIONAL, F.TYPE_ENUM, ".io.prometheus.client.MetricType"),
        ("metric", 4, REPEATED, F.TYPE_MESSAGE, ".io.prometheus.client.Metric"),
        ("unit", 5, OPTIONAL, F.TYPE_STRING, ""),
    ],
}
TYPES = ("COUNTER", "GAUGE", "SUMMARY", "UNTYPED", "HISTOGRAM", "GAUGE_HISTOGRAM")


def _classes() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    timestamp = descriptor_pb2.FileDescriptorProto(name="google/protobuf/timestamp.proto",
                                                   package="google.protobuf", syntax="proto3")
    ts = timestamp.message_type.add(name="Timestamp")
    ts.field.add(name="seconds", number=1, label=OPTIONAL, type=F.TYPE_INT64)
    ts.field.add(name="nanos", number=2, label=OPTIONAL, type=F.TYPE_INT32)
    pool.Add(timestamp)
    file = descriptor_pb2.FileDescriptorProto(
        name="io/prometheus/client/metrics.proto", package="io.prometheus.client",
        syntax="proto2", dependency=["google/protobuf/timestamp.proto"])
    enum = file.enum_type.add(name="MetricType")
    for number, name in enumerate(TYPES):
        enum.value.add(name=name, number=number)
    for message, fields in MESSAGES.items():
        added = file.message_type.add(name=message)
        for name, number, label, kind, type_name in fields:
            added.field.add(name=name, number=number, label=label, type=kind,
                            **({"type_name": type_name} if type_name else {}))
    pool.Add(file)
    return {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"io.prometheus.client.{name}")) for name in MESSAGES}


CLASSES = _classes()


def decode(data: bytes) -> list[Any]:
    """The MetricFamily messages of a delimited exposition, in order."""
    families = []
    position = 0
    while position < len(data):
        size, position = _DecodeVarint(data, position)
        family = CLASSES["MetricFamily"]()
        family.ParseFromString(data[position:position + size])
        families.append(family)
        position += size
    return families


def type_name(family: Any) -> str:
    return TYPES[family.type]
