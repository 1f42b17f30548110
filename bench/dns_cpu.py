"""Where a direct dns check's CPU goes, in-process: the check beside its parts and its floor.

    .venv/bin/python bench/dns_cpu.py [--runs 3000] [--repeat 5] [--profile 25]

Against a real dnsmasq on 127.0.0.1 (the one bench/dns_query.py starts: `host.test A
127.0.0.5`, no upstream, nothing else sent anywhere), each row measured in the same process,
one after the other, CPU per operation (user + system, `time.process_time`), the median of
--repeat batches of --runs:

- `dns.message.from_wire` alone, over a reply dnsmasq sent (dnspython's whole message layer);
- the codec's full parse (`from_wire` and the question, answers and TTLs read from the Message)
  and `parse_reply` as the check calls it (the cheap read, the full parse its fallback);
- the floor of a UDP query on the loop: a fresh socket, `sock_sendto`, `sock_recvfrom`, close,
  no parsing, no deadline, no check;
- the project's `udp_exchange` with an `accept` that takes anything (its source checks);
- the whole check, through the agent's Runner with the check's memory, as the agent runs it.

Runs follow each other at full speed, so none of them pays for waking the process from
sleep, which a paced agent does (bench/wakeups.py); the difference between the check and the
floor is what netsentry itself adds per query. --profile N prints the N functions with the most
own time over a cProfile'd batch of check runs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import dns.message
import dns_query

from exporter.checks import KINDS
from exporter.codecs import dns as codec
from exporter.config.load import load_check
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Address, Resolver
from exporter.net.udp import udp_exchange
from exporter.runner import Runner


def per_call(fn: Callable[[], object], runs: int, repeat: int) -> float:
    """Median CPU µs per call of `fn` over `repeat` batches of `runs`."""
    batches = []
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(runs):
            fn()
        batches.append((time.process_time() - started) / runs * 1e6)
    return statistics.median(batches)


async def per_await(fn: Callable[[], Awaitable[object]], runs: int, repeat: int) -> float:
    batches = []
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(runs):
            await fn()
        batches.append((time.process_time() - started) / runs * 1e6)
    return statistics.median(batches)


async def bare_exchange(loop: asyncio.AbstractEventLoop, sockaddr: tuple[str, int],
                        wire: bytes) -> bytes:
    """The floor: one datagram out and one back on the loop, and nothing else."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        await loop.sock_sendto(sock, wire, sockaddr)
        data, _ = await loop.sock_recvfrom(sock, 65535)
        return data
    finally:
        sock.close()


async def measure(port: int, args: argparse.Namespace) -> tuple[list[tuple[str, float]], str]:
    loop = asyncio.get_running_loop()
    sockaddr = (dns_query.HOST, port)
    query = codec.build_query(dns_query.QUERY_NAME, "A")
    reply = await bare_exchange(loop, sockaddr, query.wire)
    parsed = codec.parse_reply(reply, query)
    if parsed.answers != (dns_query.QUERY_ADDRESS,):
        raise RuntimeError(f"dnsmasq answered {parsed}")
    runs, repeat = args.runs, args.repeat
    rows = [
        ("dns.message.from_wire alone", per_call(
            lambda: dns.message.from_wire(reply, one_rr_per_rrset=True), runs * 4, repeat)),
        ("codec: full parse (from_wire + reading it)", per_call(
            lambda: codec._full_reply(reply, query, query.id), runs * 4, repeat)),
        ("codec: parse_reply, as the check calls it", per_call(
            lambda: codec.parse_reply(reply, query), runs * 4, repeat)),
    ]

    def bare() -> Awaitable[bytes]:
        return bare_exchange(loop, sockaddr, query.wire)

    address = Address(socket.AF_INET, sockaddr)
    rows.append(("floor: UDP exchange on the loop, no parsing",
                 await per_await(bare, runs, repeat)))
    rows.append(("net.udp.udp_exchange, accepting anything", await per_await(
        lambda: udp_exchange(address, query.wire, lambda _: True), runs, repeat)))

    check = load_check({"name": "dns", "kind": "dns", "interval": "10s", "timeout": "2s",
                        "target": dns_query.QUERY_NAME, "server": f"{dns_query.HOST}:{port}"},
                       "bench")
    pool = BlockingPool(2)
    try:
        runner = Runner(Resolver(pool), KINDS)
        memory: dict[str, Any] = {}
        for _ in range(100):  # warm: the query built, caches filled
            result = await runner.run(check, memory=memory)
        if not result.success:
            raise RuntimeError(f"the dns check failed: {result}")
        rows.append(("the dns check, through the Runner", await per_await(
            lambda: runner.run(check, memory=memory), runs, repeat)))
        profile = ""
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(runs):
                await runner.run(check, memory=memory)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
            profile = out.getvalue()
    finally:
        pool.close()
    return rows, profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000, help="operations per batch")
    parser.add_argument("--repeat", type=int, default=5, help="batches; the median is shown")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N functions with the most own time in the check")
    args = parser.parse_args(argv)
    if not 100 <= args.runs <= 100_000 or not 1 <= args.repeat <= 50:
        parser.error("--runs in [100, 100000], --repeat in [1, 50]")
    with common.Children() as children, tempfile.TemporaryDirectory() as workdir:
        dnsmasq = dns_query.start_dnsmasq(children, Path(workdir))
        try:
            rows, profile = asyncio.run(measure(dnsmasq.port, args))
        finally:
            children.stop(dnsmasq.proc)
            dnsmasq.log.join(5.0)
    table = common.Table(["in-process, back to back", "CPU per operation"])
    for label, us in rows:
        table.add(label, f"{us:.1f} µs")
    print(table.render())
    figures = dict(rows)
    floor = figures["floor: UDP exchange on the loop, no parsing"]
    check = figures["the dns check, through the Runner"]
    print(f"the check: {check:.1f} µs = the floor {floor:.1f} + {check - floor:.1f} µs of its own; "
          f"parse_reply {figures['codec: parse_reply, as the check calls it']:.1f} µs, "
          f"the full parse {figures['codec: full parse (from_wire + reading it)']:.1f} µs")
    if profile:
        print(profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
