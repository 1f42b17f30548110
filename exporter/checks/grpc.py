"""The `grpc` check: one call of the standard health service, `grpc.health.v1.Health/Check`.

Over TLS (ALPN must choose h2) or in the clear (HTTP/2 with prior knowledge, as gRPC does):
resolve, connect, TLS, then a POST with one length-prefixed HealthCheckRequest and a response
whose status is in its trailers (or its headers, for a trailers-only answer). The protobuf
messages are the small pure codec's (`codecs/grpc`); no grpcio at run time.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from exporter import __version__, metrics
from exporter.checks.base import Kind, Run, option, readable_file
from exporter.checks.connection import (
    CONNECT_REASONS,
    TCP_INFO_SPECS,
    TLS_SPECS,
    record_tcp_info,
    record_tls,
    resolve_target,
    tls_context,
)
from exporter.codecs import grpc as codec
from exporter.config.targets import HostPort, parse_host_port
from exporter.errors import CheckError, Reason
from exporter.net import http2_client, http_client
from exporter.net.resolve import FAMILIES
from exporter.net.stream import open_stream

MAX_BODY = 64 << 10  # a health response is 7 bytes framed; more is not one


def parse_target(text: str) -> HostPort:
    if "/" in text:
        raise ValueError(f"invalid target {text!r}: a grpc target is host:port, without a "
                         "scheme or path (name the service with `service`)")
    return parse_host_port(text, "tcp")


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    target: HostPort = option(parse=parse_target, raw=str)
    service: str = option("")
    tls: bool = option(False)
    server_name: str = option("")
    ca_file: str = option("", check=readable_file)
    tls_insecure_skip_verify: bool = option(False)
    family: str = option("any", choices=tuple(FAMILIES))

    def problems(self) -> list[tuple[str, str]]:
        return [(key, "applies to TLS only: set tls = true") for key, value in (
            ("server_name", self.server_name), ("ca_file", self.ca_file),
            ("tls_insecure_skip_verify", self.tls_insecure_skip_verify)) if value and not self.tls]


async def check(settings: GrpcSettings, run: Run) -> None:
    target = settings.target
    address = await resolve_target(run, target.host, target.port, settings.family)
    context: ssl.SSLContext | None = None
    if settings.tls:
        context = tls_context(run, settings.ca_file, settings.tls_insecure_skip_verify, ("h2",))
    host = f"[{target.host}]" if ":" in target.host else target.host
    timings: dict[str, float] = {}
    async with open_stream(address, ssl_context=context,
                           server_hostname=(settings.server_name or target.host)
                           if context else None, timings=timings) as stream:
        run.gauge(metrics.TCP_CONNECT, timings["connect"])
        if stream.tls is not None:
            run.gauge(metrics.TLS_HANDSHAKE, timings["tls"])
            record_tls(run, stream.tls)
            chosen = stream.tls.selected_alpn_protocol()
            if chosen != "h2":
                raise CheckError(Reason.UNEXPECTED_RESPONSE, "the server did not negotiate "
                                 f"HTTP/2 by ALPN (it chose {chosen or 'nothing'}): gRPC "
                                 "needs HTTP/2")
        headers = [("content-type", "application/grpc"), ("te", "trailers"),
                   ("user-agent", f"netsentry/{__version__}")]
        try:
            response = await http2_client.request(
                stream, "POST", f"{host}:{target.port}", codec.HEALTH_CHECK_PATH,
                scheme="https" if context else "http", headers=headers,
                body=codec.frame(codec.encode_request(settings.service)), max_body=MAX_BODY)
        except http_client.ResponseTooLarge as exc:
            raise CheckError(Reason.MALFORMED_RESPONSE, str(exc)) from None
        except http_client.ResponseError as exc:
            raise CheckError(Reason.MALFORMED_RESPONSE, str(exc)) from None
        record_tcp_info(run, stream.sock)
    _judge(settings, run, response)


def _judge(settings: GrpcSettings, run: Run, response: http_client.ClientResponse) -> None:
    headers = dict(response.headers)
    if response.status != 200:
        raise CheckError(Reason.UNEXPECTED_RESPONSE, f"HTTP status {response.status}: not a "
                         "gRPC response (gRPC answers 200)")
    content_type = headers.get("content-type", "")
    if not content_type.startswith("application/grpc"):
        raise CheckError(Reason.UNEXPECTED_RESPONSE, "not a gRPC response: content-type "
                         f"{content_type or '(none)'}")
    trailers = dict(response.trailers) if response.trailers else headers
    raw = trailers.get("grpc-status")
    if raw is None:
        raise CheckError(Reason.MALFORMED_RESPONSE, "the response has no grpc-status")
    if not raw.isdigit() or len(raw) > 5:
        raise CheckError(Reason.MALFORMED_RESPONSE, f"invalid grpc-status {raw[:20]!r}")
    code = int(raw)
    run.gauge(metrics.GRPC_STATUS_CODE, code)
    run.detail("grpc status", f"{code} {codec.status_name(code)}")
    if code != 0:
        message = codec.decode_message(trailers.get("grpc-message", ""))[:200]
        if code == 5 and not message:  # grpc.health.v1 answers so for a service it lacks
            message = (f"the health service does not know service {settings.service!r}"
                       if settings.service else "the server has no health service")
        raise CheckError(Reason.BAD_STATUS, codec.status_name(code)
                         + (f": {message}" if message else ""))
    try:
        messages = codec.unframe(response.body)
        if len(messages) != 1:
            raise codec.GrpcCodecError(f"{len(messages)} messages in the response, not one")
        status = codec.decode_response(messages[0])
    except codec.GrpcCodecError as exc:
        raise CheckError(Reason.MALFORMED_RESPONSE, str(exc)) from None
    for value, name in codec.SERVING_STATUSES.items():
        run.gauge(metrics.GRPC_HEALTH_STATUS, float(value == status), name)
    name = codec.SERVING_STATUSES.get(status, f"status {status}")
    run.detail("serving status", name)
    if status != 1:
        service = f"service {settings.service!r}" if settings.service else "the server"
        raise CheckError(Reason.BAD_STATUS, f"{service} is {name}, not SERVING")


KIND = Kind(
    name="grpc",
    settings=GrpcSettings,
    check=check,
    reasons=(*CONNECT_REASONS, Reason.TLS_ERROR, Reason.BAD_STATUS,
             Reason.UNEXPECTED_RESPONSE, Reason.MALFORMED_RESPONSE, Reason.INTERNAL_ERROR),
    specs=(metrics.DNS_LOOKUP, metrics.TCP_CONNECT, *TCP_INFO_SPECS, metrics.TLS_HANDSHAKE,
           *TLS_SPECS, metrics.GRPC_HEALTH_STATUS, metrics.GRPC_STATUS_CODE),
    summary="call the gRPC health service (grpc.health.v1.Health/Check) on host:port",
)
