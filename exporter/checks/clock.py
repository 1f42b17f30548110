"""The `clock` check: this host's kernel clock discipline, as the time daemon left it.

It takes no target: it reads adjtimex(2) (read-only) and exports whether the kernel says the
clock is synchronised, its estimated and maximum error, the frequency correction, the TAI
offset and the clock state. An unsynchronised clock fails the run as `unsynchronized`, and
its values are exported all the same: they are what the kernel says, not a broken reply.
Where adjtimex cannot be read (not Linux, or a sandbox that forbids it) the run succeeds with
no clock metrics and a detail saying why, logged once rather than every run. The wall-clock
steps the agent sees are a fact of the host, counted once by the scheduler in
`netsentry_clock_steps_total`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from exporter import metrics
from exporter.checks.base import CheckFunc, Kind, Run
from exporter.codecs import timex
from exporter.codecs.timex import Timex
from exporter.errors import CheckError, Reason
from exporter.net import kernel_clock
from exporter.net.kernel_clock import ClockUnavailable, Syscall

log = logging.getLogger(__name__)

# The `state` label: the kernel's TIME_* names, short.
STATES = {name: name.removeprefix("TIME_").lower() for name in timex.TIME_STATES}


@dataclass(frozen=True, slots=True)
class ClockSettings:
    """No keys of its own: the clock is this host's, and thresholds belong in alert rules."""


def make_check(syscall: Syscall) -> CheckFunc:
    """The check, reading the kernel clock through `syscall` (tests inject their own)."""
    said: set[str] = set()  # why the clock cannot be read, as already logged

    async def check(settings: ClockSettings, run: Run) -> None:
        try:
            clock = kernel_clock.read(syscall)
        except ClockUnavailable as exc:
            why = str(exc)
            run.detail("clock", f"not measured: {why}")
            if why not in said:
                said.add(why)
                log.warning("cannot read the kernel clock; clock checks export no clock "
                            "metrics", extra={"reason": why})
            return
        record(run, clock)
        if not clock.synchronized:
            raise CheckError(Reason.UNSYNCHRONIZED, _why_unsynchronized(clock))

    return check


def record(run: Run, clock: Timex) -> None:
    run.detail("state", clock.state)
    run.detail("status", " ".join(clock.flags) or "no flags")
    run.gauge(metrics.CLOCK_SYNCHRONIZED, int(clock.synchronized))
    run.gauge(metrics.CLOCK_ESTIMATED_ERROR, clock.estimated_error_seconds)
    run.gauge(metrics.CLOCK_MAX_ERROR, clock.max_error_seconds)
    run.gauge(metrics.CLOCK_FREQUENCY, clock.frequency_adjustment_ratio)
    # TAI − UTC has been 10 s or more since 1972: 0 is the kernel's "nobody told me".
    if clock.tai_offset_seconds:
        run.gauge(metrics.CLOCK_TAI_OFFSET, clock.tai_offset_seconds)
    else:
        run.detail("tai offset", "unset (the time daemon did not set it)")
    for name, label in STATES.items():
        run.gauge(metrics.CLOCK_STATE, int(clock.state == name), label)


def _why_unsynchronized(clock: Timex) -> str:
    if clock.status & timex.STA_UNSYNC:
        return (f"the kernel clock is unsynchronised (STA_UNSYNC, maximum error "
                f"{clock.max_error_seconds:g}s): no time daemon has synchronised it lately")
    flags = " ".join(clock.flags) or "no flags"
    return (f"the kernel clock is in state {clock.state} (status {flags}): its clock or PPS "
            "discipline failed")


KIND = Kind(
    name="clock",
    settings=ClockSettings,
    check=make_check(kernel_clock.system_adjtimex()),
    reasons=(Reason.UNSYNCHRONIZED, Reason.INTERNAL_ERROR),
    specs=(metrics.CLOCK_SYNCHRONIZED, metrics.CLOCK_ESTIMATED_ERROR, metrics.CLOCK_MAX_ERROR,
           metrics.CLOCK_FREQUENCY, metrics.CLOCK_TAI_OFFSET, metrics.CLOCK_STATE),
    summary="this host's kernel clock discipline (adjtimex): synchronised or not, error "
            "bounds, frequency, TAI offset",
)
