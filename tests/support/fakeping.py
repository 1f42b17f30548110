"""A hostile ICMP echo peer, for the ping check's tests: run it where the kernel's own echo
replies are off (net.ipv4.icmp_echo_ignore_all=1 in a namespace of the test's own).

    python tests/support/fakeping.py SECONDS

It reads echo requests on a raw socket and answers the i-th request of each identifier (i
from 0) thus, so that every kind of unwanted message is sent exactly once a run:

    0  a reply with another identifier at once; the real reply 1.6 s later (after its slot)
    1  the reply, twice (a duplicate)
    2  a port unreachable whose quote is cut to 2 bytes and a reply with a wrong checksum,
       then the reply
    3  time exceeded quoting sequence + 100, and quoting identifier + 1 (datagrams never
       sent), then the reply
    4  time exceeded quoting this very echo, then the reply (after the error)
    5+ nothing

It prints "ready" once listening, and exits after SECONDS.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from exporter.codecs.icmp import checksum  # run as a script: the path first

LATE = 1.6


def icmp(kind: int, code: int, rest: bytes, data: bytes) -> bytes:
    message = bytes([kind, code, 0, 0]) + rest + data
    return message[:2] + checksum(message).to_bytes(2, "big") + message[4:]


def main() -> None:
    lifetime = float(sys.argv[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(255, 1, struct.pack("@I", 0xFFFFFFFF & ~(1 << 8)))  # ICMP_FILTER: echo only
    sock.settimeout(0.1)
    seen: dict[int, int] = {}
    print("ready", flush=True)
    end = time.monotonic() + lifetime
    while time.monotonic() < end:
        try:
            packet, (source, _) = sock.recvfrom(65535)
        except TimeoutError:
            continue
        header = (packet[0] & 0x0F) * 4
        if len(packet) < header + 8 or packet[header] != 8:
            continue
        identifier = struct.unpack_from("!H", packet, header + 4)[0]
        index = seen.get(identifier, 0)
        seen[identifier] = index + 1
        answer(sock, packet, source, index)


def answer(sock: socket.socket, packet: bytes, source: str, index: int) -> None:
    """Answer the index-th echo request of its identifier (see the module docstring)."""
    header = (packet[0] & 0x0F) * 4
    request = packet[header:]
    identifier, sequence = struct.unpack_from("!HH", request, 4)
    payload = request[8:]

    def reply(ident: int = identifier, seq: int = sequence) -> bytes:
        return icmp(0, 0, struct.pack("!HH", ident, seq), payload)

    def quote(ident: int = identifier, seq: int = sequence) -> bytes:
        echo = request[:4] + struct.pack("!HH", ident, seq)
        return icmp(11, 0, b"\0" * 4, packet[:header] + echo)

    def send(data: bytes) -> None:
        sock.sendto(data, (source, 0))

    if index == 0:
        send(reply(ident=(identifier + 1) & 0xFFFF))
        threading.Timer(LATE, send, (reply(),)).start()
    elif index == 1:
        send(reply())
        send(reply())
    elif index == 2:
        send(icmp(3, 3, b"\0" * 4, packet[:2]))  # an error whose quote is cut short
        bad = bytearray(reply())
        bad[2] ^= 0xFF
        send(bytes(bad))
        send(reply())
    elif index == 3:
        send(quote(seq=(sequence + 100) & 0xFFFF))
        send(quote(ident=(identifier + 1) & 0xFFFF))
        send(reply())
    elif index == 4:
        send(quote())
        send(reply())


if __name__ == "__main__":
    main()
