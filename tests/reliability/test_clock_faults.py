"""Clock faults: the wall clock stepped ±1 hour under a running agent, and the kernel clock's
discipline changing state under a clock check.

The step is real to the agent and to nobody else: libfaketime (Debian `faketime`), preloaded
into the agent's process only, shifts what CLOCK_REALTIME reads there by the offset written
in a file the test controls (read at every call), and leaves CLOCK_MONOTONIC alone, as a
`date -s` or a VM resume would. APScheduler, the step detector and the timestamps the agent
exports all see the step; the machine's clock is never touched.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.codecs import timex
from exporter.errors import Reason
from exporter.net.kernel_clock import Syscall
from tests.checks.test_clock import NATIVE, golden, run, state_values
from tests.reliability.agentwatch import counts
from tests.support.agent import Agent
from tests.support.servers import AcceptServer

LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
CHECKS = [f"c{i}" for i in range(10)]


@pytest.fixture
def stepped_agent(tmp_path: Path) -> Iterator[tuple[Agent, Path]]:
    assert LIBFAKETIME, "libfaketime is missing: scripts/install-system-deps installs it"
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    path = tmp_path / "c.toml"
    path.write_text('[defaults]\ninterval = "1s"\ntimeout = "500ms"\n' + "".join(
        f'\n[[checks]]\nname = "{name}"\nkind = "tcp"\ntarget = "TARGET"\n'
        for name in CHECKS))
    with AcceptServer() as server:
        path.write_text(path.read_text().replace("TARGET", server.target))
        env = {"LD_PRELOAD": LIBFAKETIME[0], "FAKETIME_TIMESTAMP_FILE": str(offset),
               "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        with Agent(path, env=env) as agent:
            yield agent, offset


def _runs(agent: Agent) -> dict[str, float]:
    return {name: counts(agent, name).runs for name in CHECKS}


def _step(agent: Agent, offset: Path, to: str, steps: int) -> None:
    """Step the agent's wall clock to `to`; check that it neither stalls nor bursts."""
    before = _runs(agent)
    last_run = agent.value("netsentry_check_last_run_timestamp_seconds", check="c0", kind="tcp")
    offset.write_text(f"{to}\n")
    agent.wait_for(lambda: agent.value("netsentry_clock_steps_total") == steps, 10,
                   f"step {steps} to be counted")
    # No stall: every check runs three more times (unanswered, a step back would hold every
    # job for an hour).
    agent.wait_for(lambda: all(_runs(agent)[n] >= before[n] + 3 for n in CHECKS), 20,
                   "three runs of every check after the step")
    # No burst: unanswered, a step forward makes an hour of runs due at once, and the
    # scheduler runs the newest of them and counts the others as missed (by the thousand:
    # tests/test_scheduler.py shows it on virtual time). None missed, none skipped.
    assert all(agent.value("netsentry_scheduler_missed_runs_total", check=n, kind="tcp") == 0
               for n in CHECKS)
    assert all(agent.value("netsentry_scheduler_skipped_runs_total", check=n, kind="tcp") == 0
               for n in CHECKS)
    assert all(agent.value("netsentry_check_success", check=n, kind="tcp") == 1
               for n in CHECKS)
    # The timestamps the agent exports are wall-clock time, as the clock now says.
    now_run = agent.value("netsentry_check_last_run_timestamp_seconds", check="c0", kind="tcp")
    assert last_run is not None and now_run is not None
    jump = now_run - last_run
    assert (jump > 3000) if to == "+1h" else (jump < -3000)


def test_wall_clock_steps_an_hour_forward_and_back(stepped_agent: tuple[Agent, Path]) -> None:
    agent, offset = stepped_agent
    agent.wait_for(lambda: all(r >= 2 for r in _runs(agent).values()), 20, "two runs each")
    assert agent.value("netsentry_clock_steps_total") == 0
    _step(agent, offset, "+1h", 1)
    _step(agent, offset, "+0", 2)
    stepped = [line for line in agent.lines if "wall clock stepped" in line]
    assert len(stepped) == 2
    assert "step_seconds=3600" in stepped[0] and "step_seconds=-3600" in stepped[1]


# --- the kernel clock's discipline, changing under a clock check -----------------------------

STA_INS, STA_DEL = 0x0010, 0x0020
# What a host goes through: synchronised; the daemon stops and the kernel gives up on it
# (STA_UNSYNC, TIME_ERROR); it comes back; a leap second is announced, inserted, done.
SEQUENCE = [
    ("ok", timex.TIME_OK, {"status": 0x2001}),
    ("error", timex.TIME_ERROR, {"status": 0x2001 | timex.STA_UNSYNC, "maxerror": 16_000_000}),
    ("ok", timex.TIME_OK, {"status": 0x2001}),
    ("ins", timex.TIME_INS, {"status": 0x2001 | STA_INS}),
    ("oop", timex.TIME_OOP, {"status": 0x2001 | STA_INS}),
    ("wait", timex.TIME_WAIT, {"status": 0x2001}),
    ("ok", timex.TIME_OK, {"status": 0x2001}),
]


def changing_kernel() -> Syscall:
    states = iter(SEQUENCE)

    def call(buffer: bytearray) -> int:
        _, code, fields = next(states)
        buffer[:] = golden(NATIVE[0], NATIVE[1], **fields)
        return code

    return call


def test_clock_check_follows_the_discipline_state() -> None:
    results = run(changing_kernel(), runs=len(SEQUENCE))
    for (state, _, fields), result in zip(SEQUENCE, results, strict=True):
        states = state_values(result)
        assert states == {s: float(s == state) for s in states}, (state, states)
        unsynchronised = bool(fields["status"] & timex.STA_UNSYNC)
        assert result.success is not unsynchronised, (state, result.message)
        if unsynchronised:
            assert result.reason is Reason.UNSYNCHRONIZED
            assert "STA_UNSYNC" in result.message
