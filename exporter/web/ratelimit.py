"""The web config's `rate_limit`: one token bucket for the whole server, as exporter-toolkit's.

The bucket holds `burst` tokens and starts full; a request takes one, and one comes back every
`interval` (Go's `rate.NewLimiter(rate.Every(interval), burst)`). A request that finds the
bucket empty is answered 429 before anything else is done for it — before basic auth, so a
flood of wrong passwords costs no bcrypt run past the limit. The clock is injected: tests
step it instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, interval: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0 or burst < 1:
            raise ValueError("a token bucket needs interval > 0 and burst >= 1")
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        if now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) / self.interval)
        self._at = max(self._at, now)

    def allow(self) -> bool:
        """Take a token if there is one."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def retry_after(self) -> int:
        """Whole seconds until the next token (for `Retry-After`), at least 1."""
        self._refill()
        return max(1, math.ceil((1 - self._tokens) * self.interval))
