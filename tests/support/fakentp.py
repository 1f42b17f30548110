"""Fake NTP servers for what a real one will not do on demand.

Kiss-o'-Death (RATE, DENY, RSTR, ...), leap 3, stratum 0 and 16, a client-mode reply, a zero
transmit time, a wrong origin, a reply from the wrong port, a 20-byte packet, a receive time
after the transmit time, a bogus datagram before the valid one, silence; and honest servers
whose clock is off by as much as a test likes (for falseticker selection).

Each server is a ThreadedServer (tests/support/server.py: 127.0.0.1, port 0, bounded waits, a
clean close) on UDP and builds its replies with the project's own codec. Every
reply a client must reject carries times an hour off (BAD_OFFSET), so a test that sees an
offset over a second knows a bad reply got through.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from exporter.codecs import ntp as codec
from tests.support.server import ThreadedServer

BEHAVIOURS = (
    "answer",  # a valid reply, `offset` seconds ahead of this host
    "kiss",  # a Kiss-o'-Death with `code`, shaped as ntpd sends it (leap 3, stratum 0)
    "leap3",  # leap 3 (unsynchronized) at stratum 2
    "stratum0",  # stratum 0 with leap 0 and a zero reference ID: no kiss code, unsynchronized
    "stratum16",  # stratum 16 (unsynchronized) with leap 0
    "mode3",  # mode 3 (client) instead of 4
    "zero_transmit",  # transmit timestamp 0
    "wrong_origin",  # the origin does not echo the request's transmit timestamp
    "wrong_port",  # a valid reply, from another port
    "short",  # the first 20 bytes of a valid reply
    "receive_after_transmit",  # the receive time is later than the transmit time
    "bogus_then_valid",  # a spoofed reply (wrong port), a wrong origin, then the valid reply
    "silent",  # reads, never replies
)

BAD_OFFSET = 3600.0  # seconds: the clock of every reply a client must reject


def ntp_now(offset: float = 0.0) -> int:
    """This host's time plus `offset` seconds, as an NTP timestamp."""
    return codec.from_unix_ns(time.time_ns() + round(offset * 1e9))


class FakeNtp(ThreadedServer):
    """A fake NTP server with one `behaviour` (see BEHAVIOURS).

    `offset` is how far ahead of this host its clock is; `delays` (seconds), one per request
    in order (the last one for the rest), hold each request back before it is stamped
    received, as a slow path would; `root_delay` and `root_dispersion` are reported as given
    (seconds). The default dispersion, 50 ms, dwarfs the milliseconds by which a loaded test
    machine can delay this thread between its timestamps and its send, so that honest fakes
    agree in falseticker tests.
    """

    name = "fakentp"

    def __init__(
        self,
        behaviour: str = "answer",
        *,
        offset: float = 0.0,
        code: str = "RATE",
        stratum: int = 2,
        delays: Sequence[float] = (),
        root_delay: float = 0.0005,
        root_dispersion: float = 0.05,
        precision: int = -20,
    ) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; one of {BEHAVIOURS}")
        super().__init__(udp=True)
        self.behaviour = behaviour
        self.offset = offset
        self.code = code
        self.stratum = stratum
        self.delays = tuple(delays)
        self.root_delay = root_delay
        self.root_dispersion = root_dispersion
        self.precision = precision
        self.requests: list[float] = []  # time.monotonic() of each request's arrival
        self.sent = 0  # datagrams sent, decoys included
        self._lock = threading.Lock()
        # The spoofer: same host, another port (only the source port betrays it).
        self._spoofer = self.loopback_socket()
        self.start()

    # --- serving ---------------------------------------------------------------------------

    def handle_datagram(self, data: bytes, peer: tuple[str, int]) -> None:
        with self._lock:
            self.requests.append(time.monotonic())
            index = len(self.requests) - 1
        try:
            request = codec.parse(data)
        except codec.NtpCodecError:
            return
        if self.delays:
            # As if the request had been that long on its way: the receive time is taken
            # after, so the delay and half of it as offset show.
            time.sleep(self.delays[min(index, len(self.delays) - 1)])
        self._reply(request, ntp_now(self.offset), peer)

    def _reply(self, request: codec.Packet, received: int, peer: tuple[str, int]) -> None:
        behaviour = self.behaviour
        if behaviour == "silent":
            return
        if behaviour == "bogus_then_valid":
            self._send(self._spoofer, self._bad(request, "answer"), peer)
            self._send(self.udp, self._bad(request, "wrong_origin"), peer)
            time.sleep(0.005)
            behaviour = "answer"
        if behaviour == "answer":
            packet = self._packet(request, received, ntp_now(self.offset))
            self._send(self.udp, codec.encode(packet), peer)
        elif behaviour == "wrong_port":
            self._send(self._spoofer, self._bad(request, "answer"), peer)
        elif behaviour == "short":
            self._send(self.udp, self._bad(request, "answer")[:20], peer)
        else:
            self._send(self.udp, self._bad(request, behaviour), peer)

    def _packet(self, request: codec.Packet, received: int, transmit: int) -> codec.Packet:
        """A valid reply to `request` (RFC 5905 §9.2: the origin echoes its transmit time)."""
        return codec.Packet(
            leap=0, version=request.version or codec.VERSION, mode=codec.MODE_SERVER,
            stratum=self.stratum, poll=request.poll, precision=self.precision,
            root_delay=round(self.root_delay * 65536),
            root_dispersion=round(self.root_dispersion * 65536),
            reference_id=bytes((127, 0, 0, 1)), reference=ntp_now(self.offset - 16),
            origin=request.transmit, receive=received, transmit=transmit)

    def _bad(self, request: codec.Packet, how: str) -> bytes:
        """A reply a client must reject or fail on, with times BAD_OFFSET off."""
        received, transmit = ntp_now(BAD_OFFSET), ntp_now(BAD_OFFSET)
        packet = self._packet(request, received, transmit)
        if how == "kiss":  # as ntpd sends it: leap 3, the client's transmit time everywhere
            packet = replace(packet, leap=3, stratum=0, reference_id=self.code.encode(),
                             receive=request.transmit, transmit=request.transmit)
        elif how == "leap3":
            packet = replace(packet, leap=3)
        elif how == "stratum0":
            packet = replace(packet, stratum=0, reference_id=bytes(4))
        elif how == "stratum16":
            packet = replace(packet, stratum=16)
        elif how == "mode3":
            packet = replace(packet, mode=codec.MODE_CLIENT)
        elif how == "zero_transmit":
            packet = replace(packet, transmit=0)
        elif how == "wrong_origin":
            packet = replace(packet, origin=(request.transmit + 1) % codec.ERA or 1)
        elif how == "receive_after_transmit":
            packet = replace(packet, receive=(transmit + 2**32) % codec.ERA)
        elif how != "answer":
            raise ValueError(how)
        return codec.encode(packet)

    def _send(self, sock: socket.socket | None, wire: bytes, peer: tuple[str, int]) -> None:
        # Counted before it leaves: the client may have its answer before sendto returns.
        assert sock is not None
        with self._lock:
            self.sent += 1
        sock.sendto(wire, peer)
