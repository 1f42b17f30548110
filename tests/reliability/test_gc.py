"""A failed run leaves no cyclic garbage.

The agent's GC tuning rests on a run's garbage being acyclic, freed by reference counting at
once (README, "Garbage collection tuned for latency"). Failures broke that: asyncio.wait_for
on 3.11 and a frame keeping the exception it raises are reference cycles, and with 2,000
checks timing out they piled up in the oldest generation (bench/reliability.py measured full
passes of 0.2–0.3 s instead of 0.09 s, and the scheduler lag p99 over its 100 ms goal). Each
case runs a failing check through the runner with the collector saving what it finds.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.config.load import load_check
from exporter.config.model import CheckConfig
from exporter.errors import Reason
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.runner import Runner
from exporter.store import Result
from tests.support.httpservers import HttpServer, Reply
from tests.support.servers import closed_port
from tests.support.udpservers import closed_udp_port


class Targets:
    """Loopback targets that never answer, or refuse."""

    def __init__(self) -> None:
        self.full = socket.socket()  # listen(0) and one queued connection: SYNs are dropped
        self.full.bind(("127.0.0.1", 0))
        self.full.listen(0)
        self.filler = socket.create_connection(self.full.getsockname())
        self.silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.silent.bind(("127.0.0.1", 0))
        self.silent2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.silent2.bind(("127.0.0.1", 0))
        self.trickle = HttpServer({"/": Reply(200, b"x" * 100, trickle=0.05)})
        self.closed = closed_port()

    def close(self) -> None:
        self.trickle.close()
        for sock in (self.filler, self.full, self.silent, self.silent2):
            sock.close()


@pytest.fixture(scope="module")
def targets() -> Iterator[Targets]:
    found = Targets()
    yield found
    found.close()


def full(t: Targets) -> str:
    return f"127.0.0.1:{t.full.getsockname()[1]}"


def silent(t: Targets) -> str:
    return f"127.0.0.1:{t.silent.getsockname()[1]}"


CASES: dict[str, tuple[Any, Reason]] = {
    "tcp, accept queue full": (lambda t: {"kind": "tcp", "target": full(t)}, Reason.TIMEOUT),
    "tcp dialog, accept queue full": (lambda t: {"kind": "tcp", "target": full(t),
                                                 "dialog": [{"expect": "^220"}]},
                                      Reason.TIMEOUT),
    "tcp, refused": (lambda t: {"kind": "tcp", "target": f"127.0.0.1:{t.closed}"},
                     Reason.REFUSED),
    "dns, silent server": (lambda t: {"kind": "dns", "target": "host.test",
                                      "server": [silent(t)]}, Reason.TIMEOUT),
    "dns, two silent servers": (lambda t: {"kind": "dns", "target": "host.test",
                                           "server": [silent(t), "127.0.0.1:"
                                                      f"{t.silent2.getsockname()[1]}"]},
                                Reason.TIMEOUT),
    "dns over tcp, accept queue full": (lambda t: {"kind": "dns", "target": "host.test",
                                                   "server": [full(t)], "transport": "tcp"},
                                        Reason.TIMEOUT),
    "http, trickling body": (lambda t: {"kind": "http", "target": t.trickle.url()},
                             Reason.TIMEOUT),
    "ntp, silent server": (lambda t: {"kind": "ntp", "target": silent(t)}, Reason.TIMEOUT),
    "udp, silent port": (lambda t: {"kind": "udp", "target": silent(t), "send": "x"},
                         Reason.TIMEOUT),
    "udp, refused": (lambda t: {"kind": "udp", "target": f"127.0.0.1:{closed_udp_port()}"},
                     Reason.REFUSED),
    # Every echo refused by the kernel (EMSGSIZE: larger than the MTU, with don't-fragment).
    "ping, too big to send": (lambda t: {"kind": "ping", "target": "::1", "family": "ipv6",
                                         "size": 65527, "dont_fragment": True, "count": 2,
                                         "spacing": "10ms"}, Reason.PACKET_LOSS),
    # The destination's port is bound and silent: no port unreachable, no answer at all.
    "path, silent destination": (lambda t: {"kind": "path", "target": "127.0.0.1",
                                            "port": t.silent.getsockname()[1], "max_hops": 1,
                                            "probes_per_hop": 1}, Reason.TIMEOUT),
}


def _failing_runs(check: CheckConfig) -> tuple[list[Result], int, Counter[str]]:
    async def go() -> tuple[list[Result], int, Counter[str]]:
        pool = BlockingPool(1)
        try:
            runner = Runner(Resolver(pool))
            memory: dict[str, Any] = {}
            await runner.run(check, memory=memory)  # caches and first-use objects
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                results = [await runner.run(check, memory=memory) for _ in range(3)]
                found = gc.collect()
                kinds = Counter(type(o).__name__ for o in gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
            return results, found, kinds
        finally:
            pool.close()

    return asyncio.run(go())


@pytest.mark.parametrize("case", list(CASES))
def test_a_failed_run_leaves_no_cyclic_garbage(case: str, targets: Targets) -> None:
    table, reason = CASES[case]
    check = load_check({"name": "c", "timeout": "300ms", **table(targets)}, "test")
    results, found, kinds = _failing_runs(check)
    assert [r.reason for r in results] == [reason] * 3, [r.message for r in results]
    assert found == 0, kinds.most_common(12)
