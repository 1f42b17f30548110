"""A delay line between two TUN devices in two network namespaces: netem done in userspace.

Why userspace: this kernel (6.18, Debian's test machines) is built without the schedulers that
could delay or drop on a link. /proc/config.gz says `# CONFIG_NET_SCH_NETEM is not set`, and
there are no modules to load (no /lib/modules, no modprobe; /sys/module has sch_htb only).
Among the qdiscs built in are htb and tbf (rate shaping: a queue, not a fixed delay); fq is
not built in, so even a cls_bpf program stamping an earliest departure time (skb->tstamp, the
"EDT" way to delay) would have no qdisc honouring it, and gact (random drop) is missing too —
and bpf_get_prandom_u32 would not be reproducible anyway. So a link of the chain becomes two
persistent TUN devices, one in each namespace (`ip tuntap add ... mode tun`, made by
tests.support.netpath.Chain), and this process sits between them.

Run as `python delayline.py CONFIG_JSON` with the control socket passed as fd `ctl` (see
`main`). It
- setns()es into each namespace (through libc: os.setns is Python 3.12+) and attaches to its TUN
  device by name (TUNSETIFF on a /dev/net/tun opened there: the device belongs to the namespace
  of the opener);
- holds each packet `delay` seconds, plus a uniform U(0, jitter) when jitter is asked (so
  `delay` is a floor: packets may then be reordered), then writes it to the other device;
- drops a `loss` share of each direction, decided on arrival by a random.Random seeded from
  (seed, direction, class of packet, see below): the n-th echo request from r1 to r2 is dropped
  or not the same way every time, whatever the timing, the other direction or the background
  traffic (MLD reports, whose number varies) did; a packet arriving while `limit`
  packets of its direction are in flight is dropped as `overflow` (after its draw, so it does
  not shift later decisions);
- counts, per direction, packets received, forwarded, dropped, overflowed and unwritable, in
  total and by a short class of packet ("ipv4/icmp/8" is an echo request, "ipv6/icmp/129" an
  echo reply, "ipv4/udp", ...), so a test can compare what ping lost with what the line dropped.

Control (a stream socket, one line each way): the process sends `{"ready": true}` once both
devices are attached (or `{"error": "..."}` and exits). `stats` is answered with the stats as
one JSON line; `stop` likewise, then the process exits. It exits too when the socket reaches
EOF, on SIGTERM, when its parent dies (PR_SET_PDEATHSIG) and after `lifetime` seconds; at exit
it writes its stats to `stats_path` when one was given.
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65536
READS_PER_WAKE = 256  # packets read from one device before looking at the other and the clock


def packet_class(packet: bytes) -> str:
    """A short name for what the packet is: family, protocol and, for ICMP, the type."""
    if not packet:
        return "empty"
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        proto = packet[9]
        ihl = (packet[0] & 0x0F) * 4
        names = {1: "icmp", 6: "tcp", 17: "udp"}
        name = names.get(proto, str(proto))
        if proto == 1 and len(packet) > ihl:
            return f"ipv4/icmp/{packet[ihl]}"
        return f"ipv4/{name}"
    if version == 6 and len(packet) >= 40:
        nh = packet[6]
        start = 40
        if nh == 0 and len(packet) >= 48:  # hop-by-hop options (MLD reports have them)
            nh, start = packet[40], 40 + (packet[41] + 1) * 8
        if nh == 58 and len(packet) > start:
            return f"ipv6/icmp/{packet[start]}"
        return f"ipv6/{ {6: 'tcp', 17: 'udp'}.get(nh, str(nh)) }"
    return f"other/{version}"


class Direction:
    """One way through the line: its generator, its packets in flight, its counts."""

    def __init__(self, name: str, seed: int, loss: float, limit: int) -> None:
        self.name = name
        self.loss = loss
        self.limit = limit
        self.seed = seed
        self.rngs: dict[str, random.Random] = {}  # per class of packet
        self.jitter_rng = random.Random(f"{seed}/{name}/jitter")
        self.in_flight = 0
        self.counts = {"received": 0, "forwarded": 0, "dropped": 0, "overflow": 0,
                       "write_errors": 0}
        self.received_by: dict[str, int] = {}
        self.dropped_by: dict[str, int] = {}

    def admit(self, packet: bytes) -> bool:
        """Count the packet and decide whether it goes on (True) or is dropped."""
        kind = packet_class(packet)
        self.counts["received"] += 1
        self.received_by[kind] = self.received_by.get(kind, 0) + 1
        rng = self.rngs.get(kind)
        if rng is None:
            rng = self.rngs[kind] = random.Random(f"{self.seed}/{self.name}/{kind}")
        lost = self.loss > 0 and rng.random() < self.loss
        if lost:
            self.counts["dropped"] += 1
            self.dropped_by[kind] = self.dropped_by.get(kind, 0) + 1
            return False
        if self.in_flight >= self.limit:
            self.counts["overflow"] += 1
            return False
        return True

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "in_flight": self.in_flight,
                "received_by": dict(sorted(self.received_by.items())),
                "dropped_by": dict(sorted(self.dropped_by.items()))}


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def enter_netns(libc: ctypes.CDLL, name: str) -> None:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def attach_tun(libc: ctypes.CDLL, netns: str, device: str) -> int:
    """An fd of the TUN device `device` of namespace `netns`, non-blocking."""
    enter_netns(libc, netns)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        ifreq = struct.pack("16sH22x", device.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, ifreq)
    except OSError:
        os.close(fd)
        raise
    os.set_blocking(fd, False)
    return fd


class Line:
    def __init__(self, config: dict[str, Any], ctl: socket.socket) -> None:
        self.delay = float(config["delay"])
        self.jitter = float(config.get("jitter", 0.0))
        self.deadline = time.monotonic() + float(config.get("lifetime", 900))
        self.ctl = ctl
        self.stats_path = config.get("stats_path")
        a, b = config["a"], config["b"]  # each {"netns": ..., "device": ..., "name": ...}
        seed, loss, limit = int(config.get("seed", 0)), float(config.get("loss", 0.0)), int(
            config.get("limit", 1000))
        libc = _libc()
        self.fds = [attach_tun(libc, a["netns"], a["device"]),
                    attach_tun(libc, b["netns"], b["device"])]
        self.directions = [Direction(f"{a['name']}>{b['name']}", seed, loss, limit),
                           Direction(f"{b['name']}>{a['name']}", seed, loss, limit)]
        self.queue: list[tuple[float, int, int, bytes]] = []  # (due, seq, direction, packet)
        self.seq = 0
        self.selector = selectors.DefaultSelector()
        for i, fd in enumerate(self.fds):
            self.selector.register(fd, selectors.EVENT_READ, i)
        self.selector.register(ctl, selectors.EVENT_READ, "ctl")
        self.ctl_buffer = b""
        self.running = True

    def stats(self) -> dict[str, Any]:
        return {d.name: d.stats() for d in self.directions}

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.ctl.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            self.running = False

    def read_packets(self, index: int) -> None:
        direction = self.directions[index]
        for _ in range(READS_PER_WAKE):
            try:
                packet = os.read(self.fds[index], MAX_PACKET)
            except BlockingIOError:
                return
            if not direction.admit(packet):
                continue
            hold = self.delay
            if self.jitter > 0:
                hold += direction.jitter_rng.uniform(0, self.jitter)
            direction.in_flight += 1
            self.seq += 1
            heapq.heappush(self.queue, (time.monotonic() + hold, self.seq, index, packet))

    def deliver_due(self) -> None:
        now = time.monotonic()
        while self.queue and self.queue[0][0] <= now:
            _, _, index, packet = heapq.heappop(self.queue)
            direction = self.directions[index]
            direction.in_flight -= 1
            try:
                os.write(self.fds[1 - index], packet)
                direction.counts["forwarded"] += 1
            except OSError:  # the device is down, or its queue is full
                direction.counts["write_errors"] += 1

    def control(self) -> None:
        try:
            data = self.ctl.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.running = False
            return
        self.ctl_buffer += data
        while b"\n" in self.ctl_buffer:
            line, self.ctl_buffer = self.ctl_buffer.split(b"\n", 1)
            command = line.strip().decode()
            if command == "stats":
                self.send(self.stats())
            elif command == "stop":
                self.send(self.stats())
                self.running = False
            else:
                self.send({"error": f"unknown command {command!r}"})

    def loop(self) -> None:
        self.send({"ready": True})
        while self.running:
            now = time.monotonic()
            if now >= self.deadline:
                break
            timeout = self.deadline - now
            if self.queue:
                timeout = min(timeout, max(0.0, self.queue[0][0] - now))
            for key, _ in self.selector.select(timeout):
                if key.data == "ctl":
                    self.control()
                else:
                    self.read_packets(key.data)
            self.deliver_due()

    def close(self) -> None:
        if self.stats_path:
            tmp = f"{self.stats_path}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.stats(), f)
            os.replace(tmp, self.stats_path)
        for fd in self.fds:
            os.close(fd)


def main() -> None:
    config = json.loads(sys.argv[1])
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(config["parent"]):  # the parent died before prctl
        sys.exit(1)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    ctl = socket.socket(fileno=int(config["ctl"]))
    try:
        line = Line(config, ctl)
    except OSError as exc:
        ctl.sendall(json.dumps({"error": str(exc)}).encode() + b"\n")
        sys.exit(1)
    try:
        line.loop()
    finally:
        line.close()


if __name__ == "__main__":
    main()
