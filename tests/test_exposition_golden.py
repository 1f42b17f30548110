"""The exposition of a fixed store, byte for byte: a layout change must not move a byte.

Every kind records every metric it declares, with fixed values, and `/probe` renders each
kind's run; the text is compared with `tests/golden/`. After a deliberate change of the
exposition, write the files anew with `NETSENTRY_WRITE_GOLDEN=1` set for this test, and review
the diff.
"""

import os
from pathlib import Path

from exporter import metrics
from exporter.checks import KINDS
from exporter.config.load import load_text
from exporter.exposition import AgentSnapshot, render, render_probe
from exporter.store import Result, Store, split

GOLDEN = Path(__file__).parent / "golden"

# One check of each kind, named after it: its target, and other keys.
CHECKS: dict[str, dict[str, str]] = {
    "tcp": {"target": "127.0.0.1:80"},
    "dns": {"target": "localhost"},
    "http": {"target": "http://127.0.0.1/"},
    "socket": {},
    "ntp": {"target": "127.0.0.1", "interval": "1m"},
    "clock": {},
    "udp": {"target": "127.0.0.1:7"},
    "ping": {"target": "127.0.0.1"},
    "path": {"target": "127.0.0.1"},
    "grpc": {"target": "127.0.0.1:50051"},
    "websocket": {"target": "ws://127.0.0.1/"},
}
TEXT = "".join(f'\n[[checks]]\nname = "{kind}"\nkind = "{kind}"\n'
               + "".join(f'{key} = "{value}"\n' for key, value in keys.items())
               for kind, keys in CHECKS.items())


def agent() -> AgentSnapshot:
    return AgentSnapshot(
        version="1.2.3", python_version="3.11.7", hostname="host-1", reload_ok=True,
        reload_time=1700000000.5, in_flight=3, configured={"tcp": 1, "dns": 1},
        lag_buckets=(1, 2) + (0,) * (len(metrics.LAG_BUCKETS) - 1), lag_sum=0.0001,
        clock_steps=1, missed={"tcp": 2}, skipped={"dns": 1}, shard=(0, 1), web_reload_ok=True,
    )


def result(kind: str, success: bool, finished: float) -> Result:
    gauges = []
    counts = []
    samples = []
    for index, spec in enumerate(KINDS[kind].specs):
        labels = tuple(f"{label}-{index}" for label in spec.labels)
        if spec.type == metrics.COUNTER:
            counts.append((spec, labels, index + 1))
        elif spec.type == metrics.HISTOGRAM:  # a sample in the first, a middle and +Inf
            samples += [(spec, labels, value) for value in (
                spec.buckets[0] / 2, spec.buckets[len(spec.buckets) // 2], spec.buckets[-1] * 2)]
        else:
            gauges.append((spec, labels, index * 0.25 + 0.001))
    reason = None if success else KINDS[kind].reasons[0]
    return Result(success, reason, "" if success else "failed", 0.004 * (len(gauges) + 1),
                  finished, *split(gauges), *split(counts), (("detail", "x"),), *split(samples))


def store() -> Store:
    store = Store()
    store.load(load_text(TEXT, "golden.toml").checks)
    for n, (name, state) in enumerate(list(store.states.items())):
        store.record(name, state.check, result(state.check.kind, True, 1700000001.0 + n))
        store.record(name, state.check, result(state.check.kind, n % 2 == 0, 1700000002.0 + n))
    return store


def compare(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NETSENTRY_WRITE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_metrics_of_a_fixed_store_are_unchanged() -> None:
    compare("metrics.txt", render(store().snapshot(), agent()))


def test_probe_of_every_kind_is_unchanged() -> None:
    parts = []
    for kind in sorted(KINDS):
        parts.append(render_probe(result(kind, True, 1.0), KINDS[kind].reasons))
        parts.append(render_probe(result(kind, False, 1.0), KINDS[kind].reasons))
    compare("probe.txt", "".join(parts))


def test_the_fixed_store_has_every_kind() -> None:
    assert sorted(CHECKS) == sorted(KINDS), "give the new kind a check in CHECKS"
