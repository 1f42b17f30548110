"""The status page at N checks: memory of the latency histories, and the cost of `/` and the JSON.

    .venv/bin/python bench/status_page.py [--checks 10000] [--repeat 5] [--live 30]

Builds N tcp checks that have run for a full hour (every one-minute slot of every history
written, one in ten with a failure), then reports in this process, with no network:
- the memory the histories take: the process's RSS before and after making them, and the
  bytes tracemalloc counts for them;
- the median time to take the overview and render `/` (HTML) and `/api/v1/checks` (JSON), the
  longest of the parts the agent renders between runs, and the sizes plain and gzipped at
  level 1 (what the agent uses).
With `--live SECONDS`, it then runs a real agent with the same number of tcp checks at a 10 s
interval against loopback accept-and-close listeners (a child process), and compares two
windows of that length: one left alone, one in which `/` is fetched (gzipped, as a browser
asks) every `--page-every` seconds. It prints the scheduler lag p50/p99 and missed runs of
each window, the page's time as the client saw it, and the agent's CPU per page.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Children,
    Scrape,
    StreamLog,
    cpu_seconds,
    histogram_quantile,
    http_get,
    scrape,
    sleep_until,
    start_listeners,
)

from exporter.config.load import load_text
from exporter.errors import Reason
from exporter.history import POINTS, STEP, LatencyHistory
from exporter.store import Result, Store
from exporter.web import pages
from exporter.web.status import Filter, checks_json, checks_json_parts, overview


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def fill(history: LatencyHistory, i: int, now: float) -> None:
    for minute in range(POINTS):
        finished = now - (POINTS - 1 - minute) * STEP
        history.add(finished, 0.0002 + (i * 7 + minute) % 50 * 1e-5, True)
        if (i + minute) % 10 == 0:
            history.add(finished, 0.5, False)


def histories_memory(n: int, now: float) -> tuple[int, int]:
    """(RSS growth, bytes traced) for n full histories."""
    gc.collect()
    before = rss_bytes()
    kept = [LatencyHistory() for _ in range(n)]
    for i, history in enumerate(kept):
        fill(history, i, now)
    gc.collect()
    grown = rss_bytes() - before
    del kept
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.take_snapshot()
    kept = [LatencyHistory() for _ in range(n)]
    for i, history in enumerate(kept):
        fill(history, i, now)
    traced = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(start, "filename"))
    tracemalloc.stop()
    return grown, traced


def store_of(n: int, now: float) -> Store:
    text = "".join(f'[[checks]]\nname = "tcp-{i:05d}"\nkind = "tcp"\n'
                   f'target = "127.0.0.2:{40000 + i % 16}"\n' for i in range(n))
    store = Store()
    store.load(load_text(text, "bench").checks)
    for i, (name, state) in enumerate(list(store.states.items())):
        failed = i % 10 == 0
        store.record(name, state.check, Result(
            not failed, Reason.REFUSED if failed else None,
            "connection refused" if failed else "", 0.0004, now - 3,
            details=(("address", "127.0.0.2:40000"),)))
        fill(store.histories[name], i, now)
    return store


def median_ms(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--live", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--page-every", type=float, default=3.0, metavar="SECONDS")
    args = parser.parse_args()
    n, now = args.checks, time.time()

    grown, traced = histories_memory(n, now)
    print(f"latency histories of {n} checks, each a full hour of {POINTS} slots:")
    print(f"  RSS growth {grown / 2**20:.1f} MiB ({grown / n:.0f} bytes a check); "
          f"tracemalloc {traced / 2**20:.1f} MiB ({traced / n:.0f} bytes a check)")

    store = store_of(n, now)
    html = pages.status_page(overview(store, now, "bench", "bench", True), Filter()).encode()
    json_text = checks_json(overview(store, now, "bench", "bench", True), Filter()).encode()
    snapshot_ms = median_ms(args.repeat, lambda: overview(store, now, "bench", "bench", True))
    html_ms = median_ms(args.repeat, lambda: pages.status_page(
        overview(store, now, "bench", "bench", True), Filter()).encode())
    json_ms = median_ms(args.repeat, lambda: checks_json(
        overview(store, now, "bench", "bench", True), Filter()).encode())
    longest = {}
    renderers: tuple[tuple[str, Callable[[], Iterator[str]]], ...] = (
        ("/ (HTML)", lambda: pages.status_page_parts(
            overview(store, now, "bench", "bench", True), Filter())),
        ("/api/v1/checks", lambda: checks_json_parts(
            overview(store, now, "bench", "bench", True), Filter())))
    for name, parts in renderers:
        worst = []
        for _ in range(args.repeat):
            times = []
            started = time.perf_counter()
            for text in parts():
                text.encode()
                times.append(time.perf_counter() - started)
                started = time.perf_counter()
            worst.append(max(times) * 1000)
        longest[name] = statistics.median(worst)
    print(f"{n} checks, median of {args.repeat}:")
    print(f"  overview (the states and a copy of each history): {snapshot_ms:.0f} ms")
    for name, ms, body in (("/ (HTML)", html_ms, html), ("/api/v1/checks", json_ms, json_text)):
        gzipped = zlib.compress(body, 1)
        print(f"  {name}: {ms:.0f} ms including the overview, the longest part (what holds "
              f"up the event loop) {longest[name]:.0f} ms; {len(body) / 2**20:.1f} MiB, "
              f"{len(gzipped) / 2**20:.2f} MiB gzipped at level 1")
    if args.live:
        live(n, args.live, args.page_every)


def lag_quantiles(before: Scrape, after: Scrape) -> tuple[float, float]:
    deltas = [(le, after.lag_buckets[le] - before.lag_buckets.get(le, 0.0))
              for le in after.lag_buckets]
    return histogram_quantile(0.5, deltas), histogram_quantile(0.99, deltas)


def live(n: int, window: float, page_every: float) -> None:
    with Children() as children, tempfile.TemporaryDirectory() as tmp:
        listeners = start_listeners(children, ["127.0.0.2"], 16, max_seconds=3 * window + 300)
        path = Path(tmp) / "netsentry.toml"
        path.write_text('[defaults]\ninterval = "10s"\ntimeout = "5s"\n' + "".join(
            f'[[checks]]\nname = "tcp-{i:05d}"\nkind = "tcp"\n'
            f'target = "{listeners.endpoints[i % len(listeners.endpoints)]}"\n'
            for i in range(n)))
        proc = children.start([sys.executable, "-m", "exporter", "--web.listen-address",
                               "127.0.0.1:0", "--config.file", str(path)])
        assert proc.stderr is not None
        log = StreamLog(proc.stderr, None)
        port = int(log.wait_for(r"msg=listening address=127\.0\.0\.1:(\d+)", 120,
                                proc).group(1))
        log.wait_for(r'msg="config loaded"', 120, proc)
        sleep_until(time.monotonic() + 11, [proc], "warm-up")
        print(f"a real agent, {n} tcp checks at 10 s, two windows of {window:g} s:")
        for loads in (False, True):
            first, cpu = scrape(port), cpu_seconds(proc.pid)
            end = first.at + window
            seen: list[float] = []
            while loads and time.monotonic() + page_every < end:
                status, _, _, elapsed = http_get("127.0.0.1", port, "/",
                                                 headers={"Accept-Encoding": "gzip"})
                assert status == 200
                seen.append(elapsed)
                sleep_until(time.monotonic() + page_every - elapsed, [proc], "window")
            sleep_until(end, [proc], "window")
            last, used = scrape(port), cpu_seconds(proc.pid) - cpu
            p50, p99 = lag_quantiles(first, last)
            runs = sum(last.runs.values()) - sum(first.runs.values())
            line = (f"  {'with' if loads else 'without'} page loads: lag p50 {p50 * 1000:.1f} "
                    f"ms, p99 {p99 * 1000:.1f} ms, missed {last.missed - first.missed:g}, "
                    f"{runs / (last.at - first.at):.0f} runs/s, agent CPU {used:.1f} s")
            if seen:
                line += (f"; {len(seen)} pages, {statistics.median(seen) * 1000:.0f} ms each "
                         "(median, client-timed)")
            print(line, flush=True)


if __name__ == "__main__":
    main()
