"""Operator mistakes: a reload storm of good and bad files while scraping, SIGKILL and restart,
and a config of 10,000 checks.

Figures (how fast a killed agent serves again, how long 10,000 checks take to validate) are
printed, never asserted: the machines are shared. bench/reliability.py reports them.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from exporter.app import Agent as InProcessAgent
from exporter.app import Options
from exporter.scheduler import window_of
from tests.support.agent import ROOT, Agent
from tests.support.servers import AcceptServer


def tcp_config(checks: dict[str, str], target: str) -> str:
    """`checks` maps name -> interval; every check connects to `target`."""
    text = '[defaults]\ntimeout = "500ms"\n'
    for name, interval in checks.items():
        text += (f'\n[[checks]]\nname = "{name}"\nkind = "tcp"\ntarget = "{target}"\n'
                 f'interval = "{interval}"\n')
    return text


GOOD_A = {f"a{i}": "1s" for i in range(20)}
GOOD_B = {**{f"a{i}": "1s" for i in range(10)}, **{f"b{i}": "2s" for i in range(10)}}
BAD = [
    b'[[checks]]\nname = "x"\nkind = "tcp"\ntarget = "127.0.0.1:1"\ntimeuot = "1s"\n',
    b"[[checks]\nname = ",  # a syntax error
    b'[[checks]]\nname = "a0"\nkind = "tcp"\ntarget = "127.0.0.1:1"\n' * 2,  # duplicate
    b"v = " + b"[" * 20_000 + b"]" * 20_000,  # nested past the parser's recursion
    b"\xff\xfe\x00 not even UTF-8",
]


class Scraper:
    """Scrapes /metrics back to back on a thread until stopped (at most 60 s)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.statuses: Counter[int | str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            stage = "connect"
            try:
                conn.connect()
                stage = "request"
                conn.request("GET", "/metrics")
                response = conn.getresponse()
                response.read()
                self.statuses[response.status] += 1
            except (OSError, http.client.HTTPException) as exc:
                self.statuses[f"{type(exc).__name__} in {stage}"] += 1
            finally:
                conn.close()

    def stop(self) -> Counter[int | str]:
        self._stop.set()
        self._thread.join(15)
        return self.statuses


def _post_reload(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/-/reload")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _settled(agent: InProcessAgent) -> tuple[int, int]:
    """(tasks that are not runs in flight, open file descriptors) of this process."""
    return (len(asyncio.all_tasks()) - agent.scheduler.in_flight,
            len(os.listdir("/proc/self/fd")))


async def _storm(path: Path, target: str) -> dict[str, object]:
    path.write_text(tcp_config(GOOD_A, target))
    agent = InProcessAgent(Options(str(path), ("127.0.0.1:0",)))
    await agent.start()
    port = int(agent.bound[0].rpartition(":")[2])
    try:
        await asyncio.sleep(1.5)
        before = _settled(agent)
        scraper = Scraper(port)
        answers: Counter[int] = Counter()
        started = time.monotonic()
        for i in range(100):
            if i % 2 == 0:
                path.write_text(tcp_config(GOOD_A if i % 4 == 0 else GOOD_B, target))
            else:
                path.write_bytes(BAD[(i // 2) % len(BAD)])
            answers[await asyncio.to_thread(_post_reload, port)] += 1
            await asyncio.sleep(max(started + (i + 1) * 0.1 - time.monotonic(), 0))
        statuses = await asyncio.to_thread(scraper.stop)  # its last scrape needs the loop
        # Runs of the running config go on: two more seconds of them.
        runs_at_end = {name: agent.store.states[name].runs for name in agent.store.states}
        await asyncio.sleep(2.5)
        after = _settled(agent)
        for _ in range(50):  # connections of the last scrapes close on their own
            if after == before:
                break
            await asyncio.sleep(0.1)
            after = _settled(agent)
        return {
            "answers": answers, "statuses": statuses, "before": before, "after": after,
            "names": [c.name for c in agent.config.checks] if agent.config else [],
            "keys": agent.scheduler.keys(), "jobs": agent.scheduler.jobs,
            "windows": dict(agent.scheduler.windows), "store": set(agent.store.states),
            "reload_ok": agent.reload_ok,
            "ran": {name: agent.store.states[name].runs - runs_at_end.get(name, 0)
                    for name in agent.store.states},
        }
    finally:
        await agent.close()


def test_reload_storm_keeps_the_last_good_config(tmp_path: Path) -> None:
    with AcceptServer() as server:
        seen = asyncio.run(_storm(tmp_path / "storm.toml", server.target))
    # 100 reloads, every other one bad: the bad ones answered 500 with their problems.
    assert seen["answers"] == {200: 50, 500: 50}
    statuses = seen["statuses"]
    assert isinstance(statuses, Counter)
    assert set(statuses) == {200}, statuses  # no failed scrape
    assert statuses[200] >= 10
    # The last reload (bad) left the last good file running: B.
    assert seen["names"] == list(GOOD_B)
    assert sorted(seen["keys"]) == sorted(GOOD_B)  # type: ignore[call-overload]
    assert seen["store"] == set(GOOD_B)
    assert seen["reload_ok"] is False
    # No leaked jobs: one APScheduler job per occupied window, and exactly B's windows.
    windows = {f"{i:g}s/{n}" for i, n in (window_of(name, float(interval[:-1]))
                                          for name, interval in GOOD_B.items())}
    assert set(seen["windows"]) == windows  # type: ignore[call-overload]
    assert seen["jobs"] == len(windows)
    # No leaked tasks or descriptors once the storm is over.
    assert seen["after"] == seen["before"]
    ran = seen["ran"]
    assert isinstance(ran, dict) and all(n >= 1 for n in ran.values()), ran


def test_sigkill_then_restart_serves_again(tmp_path: Path) -> None:
    with AcceptServer() as server:
        path = tmp_path / "c.toml"
        path.write_text(tcp_config({"kept": "1s"}, server.target))
        first = Agent(path)
        port = first.port
        first.wait_for(lambda: (first.value("netsentry_check_runs_total", check="kept",
                                            kind="tcp") or 0) >= 1, what="a first run")
        first.signal(signal.SIGKILL)
        killed = time.monotonic()
        first.proc.wait(10)
        first.stop()
        with Agent(path, listen=f"127.0.0.1:{port}") as second:
            second.wait_for(lambda: second.request("GET", "/-/ready")[0] == 200,
                            what="ready after restart")
            serving = time.monotonic() - killed
            second.wait_for(lambda: (second.value("netsentry_check_runs_total", check="kept",
                                                  kind="tcp") or 0) >= 1,
                            what="a run after restart")
            assert second.port == port
    print(f"\nSIGKILL -> serving again on the same port: {serving:.2f} s")


def test_ten_thousand_checks_validate(tmp_path: Path) -> None:
    kinds = [
        'kind = "tcp"\ntarget = "127.0.0.1:{i}"',
        'kind = "dns"\ntarget = "host{i}.test"\nserver = ["127.0.0.1:53"]',
        'kind = "http"\ntarget = "http://127.0.0.1:8080/{i}"',
        'kind = "udp"\ntarget = "127.0.0.1:{i}"\nsend_hex = "00 01"\nexpect = "^\\\\x00"',
        'kind = "ping"\ntarget = "127.0.0.1"\ncount = 1',
    ]
    text = '[defaults]\ninterval = "10s"\n' + "".join(
        f'\n[[checks]]\nname = "c{i}"\n' + kinds[i % len(kinds)].format(i=i % 60000 + 1) + "\n"
        for i in range(10_000))
    path = tmp_path / "big.toml"
    path.write_text(text)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"{path}: OK, 10000 check(s)"
    print(f"\ncheck-config of 10,000 checks, process start included: {elapsed:.2f} s")
