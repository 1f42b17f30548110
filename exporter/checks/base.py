"""What every check kind is made of: its settings, its coroutine, its reasons and its metrics.

A kind module defines a frozen dataclass of settings whose fields are declared with `option()`
(the config loader validates TOML against them; a `problems()` method may add checks between
fields, returning `(key, message)` pairs), an `async def check(settings, run)` that
records observations on `run`, and one `Kind` value listing the failure reasons and the metric
specs it can produce. Checks never touch prometheus_client and never catch the unexpected: the
runner does both.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from exporter.errors import Reason
from exporter.metrics import Spec
from exporter.net.resolve import Resolver

S = TypeVar("S")

# Kinds share these keys; they are handled by the config loader, not by the kind's settings.
COMMON_KEYS = ("name", "kind", "group", "interval", "timeout", "labels", "max_labels",
               "refresh_interval")


def option(
    default: Any = dataclasses.MISSING,
    *,
    parse: Callable[[Any], Any] | None = None,
    raw: type | tuple[type, ...] | None = None,
    choices: tuple[str, ...] | None = None,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """Declare a settings field.

    `raw` is the TOML type expected (defaults to the field's annotation), `parse` turns the raw
    value into the field's value and raises ValueError with a message for the user, `choices`
    restricts a string, and `check` returns a problem with the final value, or None.
    """
    metadata = {"parse": parse, "raw": raw, "choices": choices, "check": check}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a frozen value as a default")
    return dataclasses.field(default=default, metadata=metadata)


# The largest file a config may name (a CA bundle, a password): Debian's whole system bundle
# is about 220 KiB. A path to /dev/zero or a huge log by mistake is refused, not read.
MAX_FILE_BYTES = 4 << 20


def readable_file(path: str) -> str | None:
    """An `option(check=...)` for paths the agent must be able to read (ca_file, ...)."""
    if not path:
        return None
    try:
        read_file(path, 0)
    except ValueError as exc:
        return f"cannot read {path}: {exc}"
    return None


def between(low: float, high: float, unit: str = "") -> Callable[[Any], str | None]:
    """An `option(check=...)` for a number from `low` to `high`, `unit` named in the message
    ("must be 1 to 64 hops, got 65"); an unset value (None) passes."""
    what = f" {unit}" if unit else ""

    def check(value: float | None) -> str | None:
        if value is None or low <= value <= high:
            return None
        return f"must be {low:g} to {high:g}{what}, got {value:g}"

    return check


def regex(text: str) -> str:
    """An `option(parse=...)` for regular expressions: compiled once to say what is wrong."""
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return text


def read_file(path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The first `limit` bytes of a file a config names; ValueError says why it cannot be read.

    Only a regular file of at most MAX_FILE_BYTES will do, and it is opened without blocking:
    a FIFO or a device named by mistake (/dev/zero) would otherwise hang or exhaust the agent,
    at load or at every run.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ValueError(exc.strerror) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ValueError(f"{info.st_size} bytes, more than the {MAX_FILE_BYTES} a file "
                             "named in the config may have")
        return os.read(fd, limit) if limit else b""
    except OSError as exc:
        raise ValueError(exc.strerror) from None
    finally:
        os.close(fd)


# One sample as people read it (`netsentry probe`, the tests): `Result.observations`.
Observation = tuple[Spec, tuple[str, ...], float]

# The key of Run.memory whose value a reload forgets, even when the check is unchanged: what
# an operator's reload should undo (an NTP server that said DENY is asked again).
UNTIL_RELOAD = "until_reload"


class Run:
    """One run of one check: its deadline, its tools and what it observed."""

    __slots__ = ("counted", "deadline", "details", "increments", "memory", "observed",
                 "resolver", "samples", "series", "values")

    def __init__(self, deadline: float, resolver: Resolver,
                 memory: dict[str, Any] | None = None) -> None:
        self.deadline = deadline  # event-loop time (monotonic) by which the run must end
        self.resolver = resolver
        # What a check keeps from one run to the next (e.g. the previous answers), for as long
        # as its config is unchanged; memory[UNTIL_RELOAD] only until the next reload, even
        # of an unchanged config. Runs of one check never overlap.
        self.memory: dict[str, Any] = {} if memory is None else memory
        # Gauges and counts as the store keeps them (`metrics.Series` and their numbers).
        self.series: list[tuple[Spec, tuple[str, ...]]] = []
        self.values: list[float] = []
        self.counted: list[tuple[Spec, tuple[str, ...]]] = []
        self.increments: list[float] = []
        self.observed: list[tuple[Spec, tuple[str, ...]]] = []  # histograms, and the samples
        self.samples: list[float] = []
        self.details: list[tuple[str, str]] = []

    def gauge(self, spec: Spec, value: float, *labels: str) -> None:
        """Record the value of a gauge as of this run."""
        self.series.append((spec, labels))
        self.values.append(value)

    def count(self, spec: Spec, *labels: str, n: float = 1) -> None:
        """Add `n` to a counter kept across runs."""
        self.counted.append((spec, labels))
        self.increments.append(n)

    def observe(self, spec: Spec, value: float, *labels: str) -> None:
        """Add one sample to a histogram kept across runs (its buckets are `spec.buckets`)."""
        self.observed.append((spec, labels))
        self.samples.append(value)

    def detail(self, name: str, value: str) -> None:
        """A fact for people (probe output, status page), never a label."""
        self.details.append((name, value))


CheckFunc = Callable[[Any, Run], Coroutine[Any, Any, None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Kind(Generic[S]):
    """A check kind, as the registry lists it."""

    name: str
    settings: type[S]
    check: Callable[[S, Run], Coroutine[Any, Any, None]]
    reasons: tuple[Reason, ...]
    specs: tuple[Spec, ...]
    # One line for `netsentry probe KIND --help` and the README.
    summary: str = ""
    # `netsentry probe` hooks, both optional. `probe_keys` turns the command line's options
    # into config keys (raising ValueError for bad usage); `probe_table` shows observations
    # side by side: it returns a table's rows, the header first, and the observations left
    # to print one per line.
    probe_keys: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    probe_table: Callable[
        [tuple[Observation, ...]], tuple[list[tuple[str, ...]], tuple[Observation, ...]]
    ] | None = None
    # Problems with a check's interval and timeout (in seconds) that only its kind can see, as
    # (key, message) pairs: e.g. an NTP server must not be asked more often than every 15 s.
    schedule_problems: Callable[[S, float, float], list[tuple[str, str]]] | None = None
    # Why no check of this kind can run in this process (a missing capability or sysctl,
    # with what fixes it), or None; asked once by check-config and at the agent's start.
    host_problem: Callable[[], str | None] | None = None
    # The names of `specs`: the runner fails a run that records any other metric.
    declared: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "declared", frozenset(spec.name for spec in self.specs))
