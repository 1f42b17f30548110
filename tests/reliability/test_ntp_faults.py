"""NTP under faults, against a real chronyd behind the fault proxy: asymmetric delay, and
chronyd restarted mid-run. Runs go through the runner directly (an NTP check may not run more
often than every 15 s, RFC 4330 §10, so a scheduled agent would make these tests minutes long;
scheduling under faults is tested with the other kinds in test_faults.py).

NTP's offset θ = ((T2 − T1) + (T3 − T4)) / 2 assumes both directions take as long. Against a
server whose clock is ours (chronyd on this host: the true offset is 0), a path that takes
d↑ up and d↓ down reports θ = (d↑ − d↓) / 2, and RFC 5905 bounds the error by half the round
trip δ: |θ − θ_true| ≤ δ / 2. The proxy adds its own lateness ε↑, ε↓ ≥ 0 to the delays it is
asked for, which is why the tests hold the agent to |θ − (d↑ − d↓)/2| ≤ (δ − d↑ − d↓)/2: the
part of the asymmetry the proxy did not set is bounded by the part of the round trip it did
not set. No wall-clock threshold is involved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from exporter import metrics
from exporter.config.load import load_check
from exporter.config.model import CheckConfig
from exporter.errors import Reason
from exporter.metrics import Spec
from exporter.net.blocking import BlockingPool
from exporter.net.resolve import Resolver
from exporter.runner import Runner
from exporter.store import Result
from tests.support.chronyd import Chronyd
from tests.support.faultproxy import FaultProxy, Faults

ASYMMETRY = 0.05  # seconds added to one direction only


@pytest.fixture
def chronyd() -> Iterator[Chronyd]:
    with Chronyd(stratum=3) as server:
        yield server


def ntp_check(target: str) -> CheckConfig:
    return load_check({"name": "ntp", "kind": "ntp", "target": target,
                              "timeout": "1s"}, "test")


class Runs:
    """Runs one check through the runner, its memory carried from run to run as the agent's."""

    def __init__(self, check: CheckConfig) -> None:
        self.check = check
        self.memory: dict[str, Any] = {}

    def __call__(self, n: int = 1) -> list[Result]:
        async def go() -> list[Result]:
            pool = BlockingPool(1)
            try:
                runner = Runner(Resolver(pool))
                return [await runner.run(self.check, memory=self.memory) for _ in range(n)]
            finally:
                pool.close()

        return asyncio.run(go())


def gauge(result: Result, spec: Spec) -> float:
    values = [value for s, _, value in result.observations if s is spec]
    assert len(values) == 1, result
    return values[0]


@pytest.mark.parametrize(("up", "down"), [(ASYMMETRY, 0.0), (0.0, ASYMMETRY),
                                          (ASYMMETRY, ASYMMETRY)])
def test_asymmetric_delay_shows_as_half_the_asymmetry(chronyd: Chronyd, up: float,
                                                      down: float) -> None:
    with FaultProxy("udp", ("127.0.0.1", chronyd.port), Faults(delay_up=up, delay_down=down)
                    ) as proxy:
        results = Runs(ntp_check(proxy.address))(3)
    expected = (up - down) / 2
    for result in results:
        assert result.success, result.message
        offset = gauge(result, metrics.NTP_OFFSET)
        delay = gauge(result, metrics.NTP_RTT)
        assert delay >= up + down
        assert abs(offset - expected) <= (delay - up - down) / 2 + 1e-4, (offset, delay)
        # And the theory's own bound on the error, with the true offset 0.
        assert abs(offset) <= delay / 2 + 1e-4


def test_chronyd_restarted_mid_run(chronyd: Chronyd) -> None:
    with FaultProxy("udp", ("127.0.0.1", chronyd.port)) as proxy:
        runs = Runs(ntp_check(proxy.address))
        assert all(r.success for r in runs(2))
        chronyd.stop()
        down = runs(2)
        assert [(r.success, r.reason) for r in down] == [(False, Reason.TIMEOUT)] * 2
        assert all(not any(s is metrics.NTP_OFFSET for s, _, _ in r.observations)
                   for r in down)  # no value without a valid reply
        with Chronyd(stratum=3) as again:
            proxy.upstream = ("127.0.0.1", again.port)
            back = runs(2)
        assert all(r.success for r in back), [r.message for r in back]
        assert gauge(back[0], metrics.NTP_STRATUM) == 3
