"""The clock check: the real adjtimex of this machine, injected kernels for every other answer,
a platform without adjtimex said once, and a target refused with its line."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from exporter.checks import KINDS, clock
from exporter.codecs import timex
from exporter.config.load import load_default, load_text
from exporter.config.model import CheckConfig
from exporter.errors import ConfigError, Reason
from exporter.net import kernel_clock
from exporter.net.kernel_clock import ClockUnavailable, Syscall
from exporter.store import Result, Store
from exporter.web import pages, status
from tests.codecs.test_timex import golden
from tests.support.agent import ROOT, Agent
from tests.support.checks import gauges, make_check, run_checks

STATES = ("ok", "ins", "del", "oop", "wait", "error")
# The fake kernels answer in this machine's own layout, as the real one does.
NATIVE = ("LP64" if kernel_clock.NATIVE.size == 208 else "ILP32",
          "<" if sys.byteorder == "little" else ">")


def clock_check() -> CheckConfig:
    return make_check("clock", name="c")


def run(syscall: Syscall, runs: int = 1) -> list[Result]:
    """Run a clock check `runs` times through the runner, with `syscall` as the kernel."""
    kind = dataclasses.replace(KINDS["clock"], check=clock.make_check(syscall))
    return run_checks(clock_check(), runs, memory={}, kinds={"clock": kind})


def kernel(state: int = timex.TIME_OK, **fields: int) -> Syscall:
    """A kernel answering with the golden struct and `fields`, and returning `state`."""

    def call(buffer: bytearray) -> int:
        assert buffer == bytes(len(buffer)), "modes must be 0: the call is read-only"
        buffer[:] = golden(NATIVE[0], NATIVE[1], **fields)
        return state

    return call


def failing(code: int) -> Syscall:
    def call(buffer: bytearray) -> int:
        raise OSError(code, os.strerror(code))

    return call


def state_values(result: Result) -> dict[str, float]:
    got = gauges(result)
    return {s: got[f"netsentry_clock_state{s}"] for s in STATES}


# --- this machine's kernel ------------------------------------------------------------------------


def test_the_real_adjtimex_reads_and_changes_nothing() -> None:
    seen: list[bytes] = []
    real = kernel_clock.system_adjtimex()

    def watched(buffer: bytearray) -> int:
        seen.append(bytes(buffer))
        return real(buffer)

    before = time.time()
    got = kernel_clock.read(watched)
    after = time.time()
    assert seen == [bytes(kernel_clock.NATIVE.size)]  # modes 0: nothing is set
    assert got.state in timex.TIME_STATES
    assert 0.9 <= got.tick_seconds * 100 <= 1.1  # ADJ_TICK's ±10 % of 1/USER_HZ
    assert got.estimated_error_seconds >= 0 and got.max_error_seconds >= 0
    # The struct's time is the wall clock at the call: the layout put it in the right place.
    assert before - 1 <= got.time_seconds + got.time_nanoseconds / 1e9 <= after + 1
    # This machine's clock is disciplined by nobody (gVisor: STA_UNSYNC, TIME_ERROR); a host
    # with chronyd or ntpd will say otherwise, and must say it consistently.
    assert got.synchronized == ("STA_UNSYNC" not in got.flags and got.state != "TIME_ERROR")


def test_the_real_clock_check() -> None:
    [result] = run(kernel_clock.system_adjtimex())
    truth = kernel_clock.read(kernel_clock.system_adjtimex())
    got = gauges(result)
    assert got["netsentry_clock_synchronized"] == int(truth.synchronized)
    assert got["netsentry_clock_max_error_seconds"] >= 0
    assert sum(state_values(result).values()) == 1
    if truth.synchronized:
        assert result.success, result
    else:
        assert result.reason is Reason.UNSYNCHRONIZED
        # Unsynchronised is a fact of the kernel, not a broken reply: the values stay.
        assert got["netsentry_clock_synchronized"] == 0


# --- injected kernels -----------------------------------------------------------------------------


def test_a_synchronised_clock() -> None:
    [result] = run(kernel())
    assert result.success, result
    assert gauges(result) == {
        "netsentry_clock_synchronized": 1,
        "netsentry_clock_estimated_error_seconds": pytest.approx(0.0015),
        "netsentry_clock_max_error_seconds": pytest.approx(0.25),
        "netsentry_clock_frequency_adjustment_ratio": pytest.approx(115e-6),
        "netsentry_clock_tai_offset_seconds": 37,
        **{f"netsentry_clock_state{s}": int(s == "ok") for s in STATES},
    }
    assert dict(result.details) == {"state": "TIME_OK", "status": "STA_PLL STA_NANO"}


def test_an_unsynchronised_clock_fails_and_keeps_its_values() -> None:
    [result] = run(kernel(timex.TIME_ERROR, status=0x0040, maxerror=16_000_000,
                          esterror=16_000_000, tai=0))
    assert result.reason is Reason.UNSYNCHRONIZED
    assert result.message == ("the kernel clock is unsynchronised (STA_UNSYNC, maximum error "
                              "16s): no time daemon has synchronised it lately")
    got = gauges(result)
    assert got["netsentry_clock_synchronized"] == 0
    assert got["netsentry_clock_max_error_seconds"] == pytest.approx(16)
    assert state_values(result) == {s: int(s == "error") for s in STATES}
    # TAI − UTC is never 0: 0 is "unset", and absent rather than exported as a value.
    assert "netsentry_clock_tai_offset_seconds" not in got
    assert dict(result.details)["tai offset"] == "unset (the time daemon did not set it)"


def test_a_failed_pps_discipline_is_unsynchronised_too() -> None:
    # STA_PPSFREQ|STA_PPSTIME without STA_PPSSIGNAL: the kernel answers TIME_ERROR.
    [result] = run(kernel(timex.TIME_ERROR, status=0x0007))
    assert (result.reason, result.message) == (
        Reason.UNSYNCHRONIZED, "the kernel clock is in state TIME_ERROR (status STA_PLL "
        "STA_PPSFREQ STA_PPSTIME): its clock or PPS discipline failed")


def test_a_leap_second_due_is_a_state_not_a_failure() -> None:
    [result] = run(kernel(timex.TIME_INS, status=0x2011))
    assert result.success
    assert state_values(result) == {s: int(s == "ins") for s in STATES}
    assert dict(result.details)["status"] == "STA_PLL STA_INS STA_NANO"


@pytest.mark.parametrize("code, name", [(errno.ENOSYS, "ENOSYS"), (errno.EPERM, "EPERM")])
def test_adjtimex_not_allowed_means_no_metrics_said_once(
    code: int, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "exporter.checks.clock"):
        results = run(failing(code), runs=3)
    why = f"adjtimex is not allowed here ({name}: {os.strerror(code)}), a sandbox or seccomp filter"
    for result in results:
        assert result.success and result.observations == ()
        assert result.details == (("clock", f"not measured: {why}"),)
    [record] = caplog.records
    assert record.getMessage() == ("cannot read the kernel clock; clock checks export no clock "
                                   "metrics")
    assert record.reason == why  # type: ignore[attr-defined]


def test_the_page_says_why() -> None:
    [result] = run(failing(errno.ENOSYS))
    store, check = Store(), clock_check()
    store.load((check,))
    store.record(check.name, check, result)
    page = pages.status_page(status.overview(store, time.time(), "1.0", "test", True),
                             status.Filter())
    assert ("<details><summary>details</summary>clock: not measured: adjtimex is not allowed "
            "here (ENOSYS: Function not implemented), a sandbox or seccomp filter</details>"
            in page)


def test_not_linux(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "exporter.checks.clock"):
        [result] = run(kernel_clock.system_adjtimex("darwin"))
    assert result.success and result.observations == ()
    assert result.details == (("clock", "not measured: adjtimex is a Linux system call and this "
                                        "platform is darwin"),)
    assert len(caplog.records) == 1


def test_a_layout_that_is_not_the_kernels_is_refused() -> None:
    # What an x32 process would see: values where the layout does not expect them.
    [result] = run(kernel(tolerance=0))
    assert result.success and result.observations == ()
    assert dict(result.details)["clock"] == (
        f"not measured: adjtimex answered in a layout other than {kernel_clock.NATIVE.name} "
        "(tolerance 0 ppm, not 500)")


def test_another_error_is_a_bug() -> None:
    [result] = run(failing(errno.EINVAL))
    assert result.reason is Reason.INTERNAL_ERROR
    assert result.message == "RuntimeError: adjtimex failed: [Errno 22] Invalid argument"


def test_read_raises_only_clock_unavailable_for_a_platform() -> None:
    with pytest.raises(ClockUnavailable, match="this platform is freebsd14"):
        kernel_clock.read(kernel_clock.system_adjtimex("freebsd14"))


# --- config, probe, agent ------------------------------------------------------------------------


@pytest.mark.parametrize("extra, expected", [
    ('target = "localhost"\n', 'f.toml:4: checks[0] "c".target: a clock check takes no target: '
                               "it checks this host; remove the key"),
    ("target = 5\n", 'f.toml:4: checks[0] "c".target: a clock check takes no target: it checks '
                     "this host; remove the key"),
    ('server = "127.0.0.1"\n', 'f.toml:4: checks[0] "c".server: unknown key'),
])
def test_config_problems(extra: str, expected: str) -> None:
    text = '[[checks]]\nname = "c"\nkind = "clock"\n' + extra
    with pytest.raises(ConfigError) as info:
        load_text(text, "f.toml")
    assert info.value.problems == [expected]


def test_embedded_default_has_a_clock_check_and_no_ntp_server() -> None:
    checks = load_default("127.0.0.1:4321").checks
    [clock_checks] = [c for c in checks if c.kind == "clock"]
    assert (clock_checks.name, clock_checks.target) == ("self-clock", "")
    assert not [c for c in checks if c.kind == "ntp"]


def netsentry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_probe_clock() -> None:
    proc = netsentry("probe", "clock", "--metrics")
    synchronized = kernel_clock.read(kernel_clock.system_adjtimex()).synchronized
    assert proc.returncode == (0 if synchronized else 1), proc.stderr
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert lines["check"] == "clock"
    assert lines["netsentry_clock_synchronized"] == str(int(synchronized))
    assert lines["state"] in timex.TIME_STATES
    assert "netsentry_clock_max_error_seconds" in lines
    human = netsentry("probe", "clock")
    assert human.returncode == proc.returncode
    rows = dict(re.split(r"  +", line, maxsplit=1) for line in human.stdout.splitlines())
    assert rows["clock synchronized"] == ("yes" if synchronized else "no")
    assert rows["clock state"] in ("ok", "ins", "del", "oop", "wait", "error")
    assert re.fullmatch(r"-?[\d.]+ (ns|µs|ms|s)( \(\w+\))?", rows["clock max error"]), rows
    assert re.fullmatch(r"-?[\d.]+(%| ppm)", rows["clock frequency adjustment"]), rows
    assert lines["result"] == ("success" if synchronized else "FAILURE (unsynchronized): "
                               "the kernel clock is unsynchronised (STA_UNSYNC, maximum error "
                               f"{float(lines['netsentry_clock_max_error_seconds']):g}s): "
                               "no time "
                               "daemon has synchronised it lately")


def test_probe_clock_with_a_target_is_bad_usage() -> None:
    proc = netsentry("probe", "clock", "pool.ntp.org")  # refused before any lookup
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("command line: target: a clock check takes no target: it "
                                   "checks this host; remove the key")


def test_the_agent_exports_the_clock(tmp_path: Any) -> None:
    path = tmp_path / "netsentry.toml"
    path.write_text('[defaults]\ninterval = "1s"\ntimeout = "500ms"\n\n'
                    '[[checks]]\nname = "clock"\nkind = "clock"\n')
    synchronized = kernel_clock.read(kernel_clock.system_adjtimex()).synchronized
    with Agent(path) as agent:
        found: Callable[[], Any] = lambda: agent.value(  # noqa: E731
            "netsentry_clock_synchronized", check="clock", kind="clock")
        agent.wait_for(lambda: found() is not None, what="the clock check to run")
        got = agent.metrics()
        page = agent.request("GET", "/")[1]
    base = {("check", "clock"), ("kind", "clock")}
    assert got["netsentry_clock_synchronized", frozenset(base)] == int(synchronized)
    assert got["netsentry_check_success", frozenset(base)] == int(synchronized)
    assert sum(got["netsentry_clock_state", frozenset(base | {("state", s)})]
               for s in STATES) == 1
    for reason in ("unsynchronized", "internal_error"):
        assert ("netsentry_check_failures_total", frozenset(base | {("reason", reason)})) in got
    # One family of clock steps, the agent's: not one per clock check.
    steps = [labels for name, labels in got if name == "netsentry_clock_steps_total"]
    assert steps == [frozenset()]
    assert "<br>state: TIME_" in page or "details</summary>state: TIME_" in page
