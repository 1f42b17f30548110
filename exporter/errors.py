"""The closed set of failure reasons, and the errors that carry them.

Every failed run ends with exactly one `Reason`. Checks raise `CheckError` for what they
diagnose themselves; the runner maps everything else (timeouts, socket errors, the unexpected)
onto this set, so the `reason` label of `netsentry_check_failures_total` never grows by accident.
"""

from __future__ import annotations

import enum


class Reason(str, enum.Enum):
    """Why a run failed. Extend only with a reason users can act on (DESIGN.md)."""

    TIMEOUT = "timeout"
    RESOLVE_ERROR = "resolve_error"
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    DNS_RCODE = "dns_rcode"
    REFUSED = "refused"
    NETWORK_ERROR = "network_error"
    TLS_ERROR = "tls_error"
    BAD_STATUS = "bad_status"
    UNEXPECTED_RESPONSE = "unexpected_response"
    MALFORMED_RESPONSE = "malformed_response"
    KISS_OF_DEATH = "kiss_of_death"
    UNSYNCHRONIZED = "unsynchronized"
    PACKET_LOSS = "packet_loss"
    INTERNAL_ERROR = "internal_error"

    def __str__(self) -> str:
        return self.value


class CheckError(Exception):
    """A run failed for a known reason; `message` is for people (logs, status page)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ConfigError(Exception):
    """A config could not be loaded; `problems` holds one line per problem, all of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
