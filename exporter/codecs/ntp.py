"""SNTP packets (RFC 4330, RFC 5905 §7.3): built, parsed and judged, over bytes, with no I/O.

Timestamps stay what they are on the wire, 64-bit unsigned fixed-point integers (32 bits of
seconds since the era's start, 32 of fraction), and every difference between two of them is
taken modulo 2**64 and read as signed (RFC 5905 §6): so an exchange that straddles the start of
era 1 (2036-02-07T06:28:16Z, when the seconds field wraps to 0) still gives the right offset, as
long as the two clocks are within 68 years of each other. Floats appear only at the very end,
for seconds.

`read_reply` applies the rules of the RFC in the order of the contract (DESIGN.md): a datagram
that fails a sanity rule is `BogusReply` (a client ignores it and keeps waiting: it may be
spoofed); a stratum-0 reply with a kiss code is `KissOfDeath`; leap 3, stratum 16 and above,
and stratum 0 without a code are `Unsynchronized`. Whatever the bytes, nothing but
`NtpCodecError` and its subclasses is raised.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

PACKET_SIZE = 48  # the header without extension fields or MAC (RFC 5905 §7.3)
PORT = 123
VERSION = 4
MODE_CLIENT = 3
MODE_SERVER = 4
LEAP_UNSYNCHRONIZED = 3  # "alarm condition (clock not synchronized)", RFC 5905 Figure 9
MAX_STRATUM = 15  # 16 means unsynchronized; 17-255 are reserved (RFC 5905 Figure 11)
ERA = 1 << 64  # 2**32 seconds of 2**32 fractions each
UNIX_EPOCH = 2_208_988_800  # seconds from 1900-01-01 (era 0) to 1970-01-01
NS = 1_000_000_000
# RFC 5905 §7.3 (and Appendix A.1.1): PHI, the frequency tolerance assumed of any clock.
PHI = 15e-6

# Kiss codes of RFC 5905 §7.4 (Figure 13), and NTSN of RFC 8915 §5.7. Anything else a server
# sends in a stratum-0 reply is reported as OTHER, so that a hostile server cannot grow the
# `code` label at will.
KISS_CODES = frozenset({"ACST", "AUTH", "AUTO", "BCST", "CRYP", "DENY", "DROP", "RSTR", "INIT",
                        "MCST", "NKEY", "NTSN", "RATE", "RMOT", "STEP"})

# LI/VN/mode, stratum, poll, precision, root delay, root dispersion, reference ID, and the
# reference, origin, receive and transmit timestamps.
_HEADER = struct.Struct("!BBbbII4sQQQQ")
assert _HEADER.size == PACKET_SIZE


class NtpCodecError(Exception):
    """Bytes that are not a usable NTP reply; `rule` names the rule they broke."""

    rule = "malformed"


class BogusReply(NtpCodecError):
    """Fails a sanity rule (RFC 5905 §8, RFC 4330 §5): not a reply to our request, or not one
    a time can be read from. A client ignores it and keeps waiting: anyone can send it."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class KissOfDeath(NtpCodecError):
    """A stratum-0 reply (RFC 5905 §7.4): the server tells the client to back off or go away."""

    rule = "kiss_of_death"

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"Kiss-o'-Death {text}" + ("" if code == text else f" ({code})"))
        self.code = code  # one of KISS_CODES, or "OTHER"
        self.text = text  # the reference ID as sent, printable


class Unsynchronized(NtpCodecError):
    """The server says its own clock is not synchronised (leap 3, or stratum 16 and above)."""

    rule = "unsynchronized"

    def __init__(self, message: str, packet: Packet) -> None:
        super().__init__(message)
        self.packet = packet


@dataclass(frozen=True, slots=True)
class Packet:
    """The 48-byte header. Timestamps are 64-bit fixed-point integers; root delay and
    dispersion are 32-bit "NTP short format" integers (16.16); poll and precision are log2
    seconds."""

    leap: int
    version: int
    mode: int
    stratum: int
    poll: int
    precision: int
    root_delay: int
    root_dispersion: int
    reference_id: bytes
    reference: int
    origin: int
    receive: int
    transmit: int

    @property
    def root_delay_seconds(self) -> float:
        return self.root_delay / 65536

    @property
    def root_dispersion_seconds(self) -> float:
        return self.root_dispersion / 65536

    @property
    def precision_seconds(self) -> float:
        return math.ldexp(1.0, self.precision)

    @property
    def reference_text(self) -> str:
        return reference_text(self.reference_id, self.stratum)


@dataclass(frozen=True, slots=True)
class Sample:
    """One request and its reply: the four timestamps of RFC 5905 §8 and what follows."""

    packet: Packet
    t1: int  # origin: our transmit time (our clock)
    t2: int  # receive: the server's receive time (its clock)
    t3: int  # transmit: the server's transmit time (its clock)
    t4: int  # destination: our receive time (our clock)

    @property
    def offset(self) -> float:
        """θ = ((T2 − T1) + (T3 − T4)) / 2, in seconds: how far the server is ahead of us."""
        return (difference(self.t2, self.t1) + difference(self.t3, self.t4)) / (2 * 2**32)

    @property
    def delay(self) -> float:
        """δ = (T4 − T1) − (T3 − T2), in seconds: the round trip, less the server's time."""
        return (difference(self.t4, self.t1) - difference(self.t3, self.t2)) / 2**32

    @property
    def root_distance(self) -> float:
        """λ: the most the server's time can be off from its primary reference, as seen here.

        RFC 5905 Appendix A.5.5.2 for a single sample: half the total round trip (the root
        delay and ours) plus the root dispersion plus this sample's own dispersion (the
        server's precision and PHI over the round trip). The peer jitter and the dispersion
        growth since the sample are zero for a sample taken just now, and MINDISP (10 ms) is
        left out: on a LAN it would swamp every other term.
        """
        delay = max(self.delay, 0.0)
        packet = self.packet
        return ((packet.root_delay_seconds + delay) / 2 + packet.root_dispersion_seconds
                + packet.precision_seconds + PHI * delay)


# --- timestamps ---------------------------------------------------------------------------------


def from_unix_ns(unix_ns: int) -> int:
    """The 64-bit NTP timestamp of a time in nanoseconds since the Unix epoch (any era)."""
    return (((unix_ns * 2**32) // NS) + UNIX_EPOCH * 2**32) % ERA


def to_unix_ns(timestamp: int, pivot_unix_ns: int) -> int:
    """The time of `timestamp` in ns since the Unix epoch, in the era that puts it within 68
    years of `pivot_unix_ns` (a timestamp does not say its era: RFC 5905 §6)."""
    return pivot_unix_ns + (difference(timestamp, from_unix_ns(pivot_unix_ns)) * NS) // 2**32


def difference(a: int, b: int) -> int:
    """a − b in 2**-32 s, modulo 2**64 and signed (RFC 5905 §6): right across an era change."""
    return ((a - b + ERA // 2) % ERA) - ERA // 2


def seconds(fixed: int) -> float:
    """A signed fixed-point difference in seconds."""
    return fixed / 2**32


def reference_text(reference_id: bytes, stratum: int) -> str:
    """The reference ID as ntpq shows it: four ASCII characters at stratum 0 and 1 (a kiss
    code, a clock source: "GPS", "PPS"), the upstream server's IPv4 address above (or the
    first four bytes of an MD5 of its IPv6 address: RFC 5905 §7.3). Never unprintable text."""
    if stratum <= 1:
        text = reference_id.rstrip(b"\0")
        if text and all(0x20 < byte < 0x7F for byte in text):
            return text.decode("ascii")
        return "0x" + reference_id.hex()
    return ".".join(str(byte) for byte in reference_id)


# --- packets ------------------------------------------------------------------------------------


def build_request(transmit: int) -> bytes:
    """A client request (RFC 4330 §5): LI 0, version 4, mode 3, every field zero but the
    transmit timestamp, which the server echoes as the origin of its reply.

    Callers pass a random `transmit`, not their clock (as chrony does, and RFC 9109 advises):
    the request then says nothing about our time, and an off-path attacker cannot guess the
    origin a forged reply must carry.
    """
    if not 0 < transmit < ERA:
        raise NtpCodecError(f"the transmit timestamp must be 1 to 2**64-1, not {transmit}")
    return encode(Packet(leap=0, version=VERSION, mode=MODE_CLIENT, stratum=0, poll=0,
                         precision=0, root_delay=0, root_dispersion=0, reference_id=bytes(4),
                         reference=0, origin=0, receive=0, transmit=transmit))


def encode(packet: Packet) -> bytes:
    """The 48 bytes of `packet` (servers in the tests build their replies with it)."""
    if not (0 <= packet.leap <= 3 and 0 <= packet.version <= 7 and 0 <= packet.mode <= 7):
        raise NtpCodecError(f"leap {packet.leap}, version {packet.version} or mode "
                            f"{packet.mode} does not fit its 2, 3 or 3 bits")
    try:
        return _HEADER.pack(
            (packet.leap << 6) | (packet.version << 3) | packet.mode, packet.stratum,
            packet.poll, packet.precision, packet.root_delay, packet.root_dispersion,
            packet.reference_id, packet.reference, packet.origin, packet.receive,
            packet.transmit)
    except struct.error as exc:
        raise NtpCodecError(f"a field is out of range: {exc}") from None


def parse(data: bytes) -> Packet:
    """The header of an NTP packet; what follows it (extension fields, MAC) is ignored."""
    if len(data) < PACKET_SIZE:
        raise BogusReply("short", f"{len(data)} bytes, shorter than the {PACKET_SIZE}-byte "
                                  "NTP header")
    (first, stratum, poll, precision, root_delay, root_dispersion, reference_id, reference,
     origin, receive, transmit) = _HEADER.unpack_from(data)
    return Packet(leap=first >> 6, version=(first >> 3) & 7, mode=first & 7, stratum=stratum,
                  poll=poll, precision=precision, root_delay=root_delay,
                  root_dispersion=root_dispersion, reference_id=reference_id,
                  reference=reference, origin=origin, receive=receive, transmit=transmit)


def read_reply(data: bytes, sent_transmit: int) -> Packet:
    """The reply to the request whose transmit timestamp was `sent_transmit`, judged.

    Raises BogusReply (ignore it, keep waiting), KissOfDeath or Unsynchronized; returns a
    packet a time can be read from. The datagram's source is the transport's to check.
    """
    packet = parse(data)
    if packet.mode != MODE_SERVER:
        raise BogusReply("wrong_mode", f"mode {packet.mode}, not {MODE_SERVER} (server)")
    # RFC 5905 §8 (the "bogus" test): the origin must echo our transmit timestamp. It is 64
    # random bits: a reply that does not echo them is not a reply to this request.
    if packet.origin != sent_transmit:
        raise BogusReply("wrong_origin", "the origin timestamp does not echo the request's "
                                         "transmit timestamp")
    if packet.transmit == 0:
        raise BogusReply("zero_transmit", "the transmit timestamp is zero")
    if packet.receive == 0:
        raise BogusReply("zero_receive", "the receive timestamp is zero")
    if difference(packet.transmit, packet.receive) < 0:
        raise BogusReply("receive_after_transmit",
                         "the server's receive time is later than its transmit time")
    # RFC 5905 §7.4: a stratum-0 reply whose reference ID is an ASCII message is a
    # Kiss-o'-Death, whatever the leap bits say (ntpd sends its INIT and STEP kisses with
    # leap 3). Without a message, stratum 0 is just "unspecified or invalid" (Figure 11):
    # chronyd answers so, with leap 3 and a zero ID, while it is not synchronised.
    if packet.stratum == 0:
        text = reference_text(packet.reference_id, 0)
        if not text.startswith("0x"):
            raise KissOfDeath(text if text in KISS_CODES else "OTHER", text)
    if packet.leap == LEAP_UNSYNCHRONIZED or packet.stratum > MAX_STRATUM or packet.stratum == 0:
        raise Unsynchronized(f"the server is not synchronized (leap {packet.leap}, stratum "
                             f"{packet.stratum})", packet)
    return packet


def sample(packet: Packet, sent_unix_ns: int, received_unix_ns: int) -> Sample:
    """The sample of a reply read by `read_reply`, with our own send and receive times."""
    return Sample(packet, from_unix_ns(sent_unix_ns), packet.receive, packet.transmit,
                  from_unix_ns(received_unix_ns))
