"""Reading one check's counters off a real agent, for tests that inject a fault and lift it.

A fault test asks three things of the agent: while the fault lasts, runs fail, and only for
the expected reason; once it is lifted, at most the run already in flight fails and the next
one succeeds; and throughout, no run is lost (runs_total keeps counting).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.agent import Agent


@dataclass(frozen=True)
class Counts:
    runs: float
    success: float | None
    failures: dict[str, float]  # reason -> count

    @property
    def failed(self) -> float:
        return sum(self.failures.values())

    def since(self, earlier: Counts) -> dict[str, float]:
        """Failures by reason between `earlier` and this reading (reasons that grew only)."""
        return {reason: n - earlier.failures.get(reason, 0) for reason, n in self.failures.items()
                if n > earlier.failures.get(reason, 0)}


def counts(agent: Agent, check: str) -> Counts:
    metrics = agent.metrics()
    runs, success, failures = 0.0, None, {}
    for (name, labels), value in metrics.items():
        label = dict(labels)
        if label.get("check") != check:
            continue
        if name == "netsentry_check_runs_total":
            runs = value
        elif name == "netsentry_check_success":
            success = value
        elif name == "netsentry_check_failures_total":
            failures[label["reason"]] = value
    return Counts(runs, success, failures)


def wait_counts(agent: Agent, check: str, predicate: object, timeout: float = 20,
                what: str = "") -> Counts:
    """Poll until `predicate(counts)` holds; the counts that satisfied it."""
    found: list[Counts] = []

    def ready() -> bool:
        now = counts(agent, check)
        if predicate(now):  # type: ignore[operator]
            found.append(now)
            return True
        return False

    agent.wait_for(ready, timeout, what or f"{check}: {predicate}")
    return found[0]


def assert_recovers(agent: Agent, check: str, lifted: Counts) -> Counts:
    """After a fault is lifted (`lifted` read just after): the run in flight may still fail,
    and the two runs after it must both succeed."""
    after = wait_counts(agent, check, lambda c: c.runs >= lifted.runs + 3,
                        what=f"{check}: three runs after the fault was lifted")
    assert after.failed - lifted.failed <= 1, after.since(lifted)
    assert after.success == 1
    return after
